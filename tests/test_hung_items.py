"""An item that does not come back, on a real local cluster: the rest of the map goes on, gather says what
runs, item_timeout ends it, a release frees its worker.

Every item appends ``start <x>`` to a log before it runs and ``done <x>`` after, so the tests count
how often each item ran, also in processes that were ended. The hung item waits for a gate file
(never made: at most 300 s, so a failing test cannot hang the suite).
"""

from __future__ import annotations

import collections
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from hpcbridge.client.arguments import ArgumentError
from hpcbridge.client.bridge import Bridge, connect
from hpcbridge.client.runs import ItemError
from hpcbridge.job import submit as jobs
from tests.conftest import module_bridge, wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the items below run on the cluster

HUNG = 37


def hangs(x: int, log: str) -> int:
    """``x``, after 10 ms; item 37 hangs (it waits up to 300 s for a file nobody makes)."""
    with open(log, "a") as out:
        out.write(f"start {x}\n")
    if x == HUNG:
        Path(log + ".pid").write_text(str(os.getpid()))
        deadline = time.monotonic() + 300
        while not os.path.exists(log + ".never") and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(0.01)
    with open(log, "a") as out:
        out.write(f"done {x}\n")
    return x


def counted(log: Path, what: str) -> collections.Counter:
    words = log.read_text().split()
    return collections.Counter(int(x) for kind, x in zip(words[::2], words[1::2]) if kind == what)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    with pytest.MonkeyPatch.context() as patch:  # the workers' slots, and those dead processes leave, stay here
        patch.setenv("HPCBRIDGE_SLOT_DIRECTORY", str(tmp_path_factory.mktemp("slots")))
        with module_bridge(tmp_path_factory, 2) as attached:
            yield attached


def test_a_hung_item_holds_back_nothing_else_gather_names_it_and_a_release_frees_its_worker(
        cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    log = tmp_path / "calls.log"
    run = bridge.map(hangs, range(100), args=(str(log),), name="hang", progress=False)
    with pytest.raises(TimeoutError) as waited:
        bridge.gather(run, timeout=20, progress=False)
    # Every other item was computed while item 37 hung: the rest of its chunk went to other tasks
    # while gather waited, and the tasks queued behind it on its worker ran.
    assert wait_for(lambda: len(counted(log, "done")) == 99, timeout=30), counted(log, "done")
    assert HUNG not in counted(log, "done")
    text = str(waited.value)
    assert "still running: item 37 (37) on tls://" in text and " s" in text
    assert "item_timeout" in text and "results('hang')" in text
    pid = int((tmp_path / "calls.log.pid").read_text())
    assert bridge.release(run) is True
    assert wait_for(lambda: not alive(pid), timeout=30)  # its worker process was ended, not left hung
    bridge.wait_for_workers(2, timeout=60)
    assert bridge.gather(bridge.map(abs, range(-4, 0), progress=False), timeout=60, progress=False) == [4, 3, 2, 1]
    assert counted(log, "start") == collections.Counter(range(100))  # every item ran once


def test_item_timeout_ends_a_hung_item_with_an_error_naming_it_and_the_rest_comes_back(
        cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    log = tmp_path / "calls.log"
    run = bridge.map(hangs, range(100), args=(str(log),), item_timeout=3, progress=False)
    with pytest.raises(ItemError) as failed:
        bridge.gather(run, timeout=120, progress=False)
    error = failed.value
    assert type(error).__name__ == "ItemTimedOut" and error.index == HUNG and error.item == "37"
    assert "ItemTimeout: it ran longer than item_timeout=3 s" in str(error)
    assert "hpcbridge ended that worker process" in str(error)
    assert error.results == [None if x == HUNG else x for x in range(100)]
    assert counted(log, "start") == collections.Counter(range(100))  # every item ran once, 37 included
    assert not alive(int((tmp_path / "calls.log.pid").read_text()))
    bridge.release(run)


def test_a_client_whose_run_another_client_handed_on_collects_every_result(cluster, tmp_path: Path) -> None:
    job, bridge = cluster
    log = tmp_path / "calls.log"
    run = bridge.map(hangs, range(100), args=(str(log),), progress=False)
    with connect(job.scheduler_file, n_workers=2, timeout=60) as other:
        with pytest.raises(TimeoutError):  # it waits, so it hands the rest of the stuck chunk on
            other.results(run.name, timeout=20, progress=False)
    assert wait_for(lambda: len(counted(log, "done")) == 99, timeout=30)
    Path(str(log) + ".never").touch()  # item 37 returns: its chunk comes back with fewer items than this run lists
    assert bridge.gather(run, timeout=60, progress=False) == list(range(100))
    assert counted(log, "start") == collections.Counter(range(100))


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "5", True, [5]])
def test_item_timeout_must_be_a_positive_number_of_seconds_or_none(cluster, value) -> None:
    _, bridge = cluster
    before = bridge.runs()
    with pytest.raises(ArgumentError) as refused:
        bridge.map(abs, range(3), item_timeout=value, name="refused", progress=False)
    assert str(refused.value).startswith("item_timeout: ") and "\n" not in str(refused.value)
    assert "a positive number of seconds, or None for no limit" in str(refused.value)
    assert bridge.runs() == before
