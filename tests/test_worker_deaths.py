"""Items that end their worker process (memory limit, os._exit, sys.exit) on a real local cluster.

The job's workers have a real memory limit (``mem=1000``: 437 MiB each beside the scheduler's
room); every item appends its number to a log file before it runs, so the tests count how often
each item ran, also in processes that died.
"""

from __future__ import annotations

import collections
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from hpcbridge.client.bridge import Bridge
from hpcbridge.client.losses import RunError
from hpcbridge.client.runs import ItemError
from hpcbridge.job import submit as jobs
from tests.conftest import module_bridge, wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the items below run on the cluster

MEMORY_HOG, EXITS, SYS_EXIT = 75, 150, 225
KILLED = 70


def misbehave(x: int, log: str) -> int:
    """Square ``x``, except three items that end their worker process or try to."""
    with open(log, "a") as out:
        out.write(f"{x}\n")
    if x == MEMORY_HOG:  # 2 GiB under a 437 MiB limit, touched as it grows, held
        import numpy as np

        blocks = [np.ones(2**23) for _ in range(32)]  # 64 MiB each
        time.sleep(60)
        return len(blocks)
    if x == EXITS:
        os._exit(3)
    if x == SYS_EXIT:
        sys.exit()
    time.sleep(0.002)
    return x * x


def killed_outright(x: int, log: str) -> int:
    """``-x``, except item 70, which kills its own worker process with SIGKILL (as the kernel's OOM killer would)."""
    with open(log, "a") as out:
        out.write(f"{x}\n")
    if x == KILLED:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.002)
    return -x


def slow_fifty(x: int, log: str) -> int:
    """``x + 1``; item 50 notes its process and takes 3 s."""
    with open(log, "a") as out:
        out.write(f"{x}\n")
    if x == 50:
        Path(log + ".pid").write_text(str(os.getpid()))
        time.sleep(3)
    return x + 1


def counted(log: Path) -> collections.Counter:
    return collections.Counter(int(line) for line in log.read_text().split())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    """2 one-thread workers with a 437 MiB memory limit each."""
    with pytest.MonkeyPatch.context() as patch:  # the workers' slots, and those dead processes leave, stay here
        patch.setenv("HPCBRIDGE_SLOT_DIRECTORY", str(tmp_path_factory.mktemp("slots")))
        with module_bridge(tmp_path_factory, 2, mem=1000) as attached:
            yield attached


def test_items_that_end_their_worker_fail_alone_with_the_cause_and_every_other_result_comes_back(
        cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    limit = next(iter(bridge.client.scheduler_info()["workers"].values()))["memory_limit"]
    assert 400 * 2**20 < limit < 480 * 2**20  # the job's real memory limit
    log = tmp_path / "calls.log"
    run = bridge.map(misbehave, range(300), args=(str(log),), name="oom", progress=False)
    with pytest.raises(ItemError) as failed:
        bridge.gather(run, timeout=240, progress=False)
    error = failed.value
    assert type(error).__name__ == "ItemKilledWorker" and error.index == MEMORY_HOG and error.item == "75"
    text = str(error)
    assert "was ended by its nanny for memory: it reached " in text  # what it reached, and the limit:
    assert f"MiB, over 95 % of the worker's {limit / 2**20:.0f} MiB limit" in text
    assert "It is not run again: it was the only item running in that process" in text
    assert "never on a third; distributed alone would try it on up to 4 workers: allowed-failures=3" in text
    assert sorted(error.errors) == [MEMORY_HOG, EXITS, SYS_EXIT]
    assert "WorkerDied: " in error.errors[EXITS] and "exited with status 3" in error.errors[EXITS]
    assert error.errors[SYS_EXIT].startswith("SystemExit")  # an item error: its worker did not die
    expected = [None if x in (MEMORY_HOG, EXITS, SYS_EXIT) else x * x for x in range(300)]
    assert error.results == expected
    assert "297 of 300 items have results" in text
    calls = counted(log)
    assert sorted(calls) == list(range(300))
    assert calls[MEMORY_HOG] == calls[EXITS] == 1  # not run on a second worker, let alone a third
    assert {x: n for x, n in calls.items() if n != 1} == {}  # every other item ran exactly once
    # The run stays on the cluster: collected again by name, the same error with the same results.
    with pytest.raises(ItemError) as again:
        bridge.results("oom", timeout=60, progress=False)
    assert again.value.index == MEMORY_HOG and again.value.results == expected
    bridge.release("oom")
    # The nannies started new workers: the cluster maps as before.
    bridge.wait_for_workers(2, timeout=60)
    assert bridge.gather(bridge.map(abs, range(-4, 0), progress=False), progress=False) == [4, 3, 2, 1]


def test_an_item_that_kills_its_worker_outright_is_pinned_by_its_retry_and_runs_on_no_third_worker(
        cluster, tmp_path: Path) -> None:
    """SIGKILL leaves the process no moment to keep what it computed: the first death is known to a
    block of items, the retry notes each item and pins the second on the item."""
    _, bridge = cluster
    log = tmp_path / "calls.log"
    run = bridge.map(killed_outright, range(200), args=(str(log),), chunk_size=100, progress=False)
    with pytest.raises(ItemError) as failed:
        bridge.gather(run, timeout=240, progress=False)
    error = failed.value
    assert type(error).__name__ == "ItemKilledWorker" and error.index == KILLED and sorted(error.errors) == [KILLED]
    assert "was killed by signal 9 (SIGKILL: e.g. the kernel's out-of-memory killer, or kill -9)" in str(error)
    assert error.results == [None if x == KILLED else -x for x in range(200)]
    calls = counted(log)
    assert calls[KILLED] == 2  # on two workers, not a third
    block = KILLED // 64 * 64  # the retry kept the items before the killing block: only those in it ran thrice
    assert {x for x, n in calls.items() if n == 3} == set(range(block, KILLED))
    assert {x for x, n in calls.items() if n == 2} == set(range(block)) | {KILLED}
    assert {x: n for x, n in calls.items() if n > 3 or x > KILLED and n != 1} == {}
    bridge.release(run)


def test_a_worker_killed_from_outside_while_an_item_runs_is_not_blamed_on_the_item(cluster, tmp_path: Path) -> None:
    """SIGTERM to a worker (a cancelled job step, an administrator) is not the item's doing: it runs again."""
    _, bridge = cluster
    bridge.wait_for_workers(2, timeout=60)
    log = tmp_path / "calls.log"
    run = bridge.map(slow_fifty, range(100), args=(str(log),), chunk_size=20, progress=False)  # 50 in 40..59
    pid_file = Path(str(log) + ".pid")
    assert wait_for(pid_file.exists, timeout=60)
    os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert bridge.gather(run, timeout=120, progress=False) == [x + 1 for x in range(100)]
    calls = counted(log)
    assert calls[50] == 2 and {x: n for x, n in calls.items() if x != 50 and n != 1} == {}  # the rest: kept


def _allow_failures(count: int, dask_scheduler=None) -> int:
    before, dask_scheduler.allowed_failures = dask_scheduler.allowed_failures, count
    return before


def test_a_chunk_that_distributed_gives_up_on_fails_with_every_other_result(cluster, tmp_path: Path) -> None:
    """A cluster with allowed-failures=0 fails a task at its worker's first death (KilledWorker), before any
    retry could pin it on an item: the chunk fails as a whole, and the error still carries the rest."""
    _, bridge = cluster
    bridge.wait_for_workers(2, timeout=60)
    before = bridge.client.run_on_scheduler(_allow_failures, 0)
    try:
        log = tmp_path / "calls.log"
        run = bridge.map(misbehave, range(140, 160), args=(str(log),), chunk_size=5, progress=False)
        with pytest.raises(RunError) as failed:
            bridge.gather(run, timeout=120, progress=False)
    finally:
        bridge.client.run_on_scheduler(_allow_failures, before)
    error = failed.value
    assert "items 10..14 of run" in str(error) and "KilledWorker" in str(error)
    assert "15 of the run's 20 items have results (in this error's .results" in str(error)
    assert error.missing == [(10, 15)]
    assert error.results == [None if 10 <= i < 15 else x * x for i, x in enumerate(range(140, 160))]
    bridge.release(run)


# --- what a retry makes of the deaths it is told about (no cluster: the nanny's reports are given) ---

def slot(key: str, fetched: int | tuple[int, int], **fields: object) -> dict:
    """A slot as read_slots gives it: ``fetched`` exact, or the (low, high) range of a block."""
    taken = fetched if isinstance(fetched, tuple) else (fetched, fetched)
    return {"key": key, "fetched": taken, "loop_done": False, "cut": None, "timed_out": None, "saved": None,
            "timed_seconds": 0.0, "item_timeout": None, **fields}


def report(*slots: dict, lines: tuple[str, ...] = ("Worker process 11 exited with status 3",)) -> dict:
    return {"lines": list(lines), "memory_limit": 2**29, "terminate": 0.95, "slots": list(slots), "address": "n"}


def death(pid: int = 11) -> dict:
    return {"worker": f"tls://w{pid}", "pid": pid, "nanny": "tls://n", "host": "h"}


def test_an_item_alone_in_its_dead_worker_is_failed_at_once_with_the_nannys_words() -> None:
    from hpcbridge.cluster.attempts import investigate

    verdict = investigate("k", 100, [death()], ask=lambda d: report(slot("k", 5), slot("other", 3, loop_done=True)))
    assert list(verdict.skip) == [4] and verdict.where[4] == "tls://w11"
    error, details = verdict.skip[4]
    assert error.startswith("WorkerDied: the worker process running it (pid 11 on tls://w11) exited with status 3.")
    assert "it was the only item running in that process" in error and "Worker process 11 exited" in details


def test_an_item_sharing_its_dead_worker_runs_again_and_is_failed_when_a_second_worker_dies() -> None:
    from hpcbridge.cluster.attempts import investigate

    shared = report(slot("k", 5), slot("other", 3))
    assert not investigate("k", 0, [death()], ask=lambda d: shared).skip  # perhaps the other item's fault
    verdict = investigate("k", 0, [death(11), death(12)], ask=lambda d: shared)
    assert list(verdict.skip) == [4] and "each of the 2 times a worker process died" in verdict.skip[4][0]


def test_a_process_killed_from_outside_is_pinned_on_its_item_only_when_it_happens_twice() -> None:
    """SIGTERM (a cancelled job step, an administrator) or SIGKILL says nothing about the item; a crash does."""
    from hpcbridge.cluster.attempts import investigate

    def killed(signal_number: int, pid: int = 11) -> dict:
        return report(slot("k", 5), lines=(f"Worker process {pid} was killed by signal {signal_number}",))

    assert not investigate("k", 0, [death()], ask=lambda d: killed(15)).skip
    twice = investigate("k", 0, [death(11), death(12)], ask=lambda d: killed(9, d["pid"]))
    assert list(twice.skip) == [4] and "killed by signal 9 (SIGKILL" in twice.skip[4][0]
    crashed = investigate("k", 0, [death()], ask=lambda d: killed(11))
    assert list(crashed.skip) == [4] and "killed by signal 11 (SIGSEGV)" in crashed.skip[4][0]


def test_a_timed_out_item_is_named_and_the_other_attempts_of_its_process_are_not_blamed() -> None:
    from hpcbridge.cluster.attempts import investigate

    timed = report(slot("k", 3, timed_out=2, timed_seconds=5.4, item_timeout=5.0), slot("other", 7))
    verdict = investigate("k", 0, [death()], ask=lambda d: timed)
    assert list(verdict.skip) == [2]
    assert verdict.skip[2][0].startswith("ItemTimeout: it ran longer than item_timeout=5 s on tls://w11 (it was "
                                         "stopped after 5.4 s)")
    assert not investigate("other", 0, [death()], ask=lambda d: timed)  # ended on purpose: rerun, no blame


def test_no_item_is_blamed_for_a_death_outside_the_items_or_without_a_report() -> None:
    from hpcbridge.cluster.attempts import investigate

    assert not investigate("k", 0, [death()], ask=lambda d: report(slot("k", 9, loop_done=True)))
    assert not investigate("k", 0, [death()], ask=lambda d: report(slot("k", 0)))
    assert not investigate("k", 0, [death()], ask=lambda d: report(slot("k", 5, saved=5)))  # between items
    # A hard kill in a first attempt is known to a block of items: the retry tracks each item from it.
    block = investigate("k", 0, [death()], ask=lambda d: report(slot("k", (65, 128))))
    assert not block.skip and block.suspect == 64
    assert not investigate("k", 0, [death()], ask=lambda d: report(slot("elsewhere", 2)))
    assert not investigate("k", 0, [death()], ask=lambda d: None)  # the nanny's node is gone too
    assert investigate("k", 0, [death()], ask=lambda d: report(slot("k", 4, cut=4, loop_done=True))).stop == 4


def test_a_chunk_notes_each_item_before_it_runs_and_a_cut_ends_it_after_the_running_one(tmp_path, monkeypatch) -> None:
    from hpcbridge.cluster import attempts
    from hpcbridge.cluster.chunks import ChunkTask, run_chunk

    monkeypatch.setenv("HPCBRIDGE_SLOT_DIRECTORY", str(tmp_path))
    seen = {}

    def item(x: int) -> int:
        if x == 13:
            [attempt] = attempts.running()
            seen["slot"] = attempts.read_slots(os.getpid())[0]["fetched"]  # a block of 64 begun
            seen["cut"] = attempt.cut()
        return -x

    values, errors, _, _, rest = run_chunk(ChunkTask("cut", item, list(range(10, 30)), 10, False))
    assert seen == {"slot": (1, 20), "cut": 4} and values == [-10, -11, -12, -13] and not errors
    # The result hands the rest back too, for a client that never got the cut's own answer.
    assert (rest["at"], rest["stop"], rest["task"].start, list(rest["task"].items)) == (14, 30, 14, list(range(14, 30)))
    assert not list(tmp_path.glob("*/*.slot"))  # an attempt that ends removes its slot


def test_an_item_counts_as_stuck_after_twenty_times_what_its_items_take_and_never_before_five_seconds(
        tmp_path, monkeypatch) -> None:
    from hpcbridge.cluster.attempts import STUCK_UNKNOWN_SECONDS, Attempt, stuck_after

    monkeypatch.setenv("HPCBRIDGE_SLOT_DIRECTORY", str(tmp_path))
    planned = Attempt("k", "r", 0, range(100), expected_per_item=0.5)
    assert stuck_after(planned, 3) == 10.0
    assert stuck_after(Attempt("k", "r", 0, range(100), expected_per_item=0.001), 3) == 5.0
    unknown = Attempt("k", "r", 0, range(100))  # chunk_size given: nothing measured
    assert stuck_after(unknown, 1) == STUCK_UNKNOWN_SECONDS  # its first item: nothing to go by
    unknown.loop_started, unknown.seen = 100.0, (11, 130.0)  # 10 items took 30 s
    assert stuck_after(unknown, 11) == 60.0
