"""Spread chunks on a real local cluster: workers with many threads get a few chunks each, whose items
their threads share (:mod:`hpcbridge.cluster.spread`); every item still runs once, an item's error
still names it, and an item that ends its worker or runs past its timeout is still named.

Every item logs its number and the process and thread that ran it, so the tests count executions
(also in processes that died) and see how a chunk's items were shared.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from hpcbridge.client.bridge import Bridge
from hpcbridge.client.planning import MAX_PROBES, SPREAD_MIN_THREADS
from hpcbridge.client.runs import ItemError
from hpcbridge.job import submit as jobs
from tests.conftest import module_bridge

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the items below run on the cluster

FAILS, EXITS, HANGS = 1234, 2345, 1777


def logged(x: int, log: str, heavy_every: int = 7) -> int:
    """``x * x`` after 2 ms (every ``heavy_every``-th item 20 ms); logs the item and where it ran."""
    with open(log, "a") as out:
        out.write(f"{x} {os.getpid()}-{threading.get_ident()}\n")
    time.sleep(0.02 if x % heavy_every == 0 else 0.002)
    return x * x


def misbehaves(x: int, log: str, what: str) -> int:
    """As :func:`logged`, except one item: it raises, ends its worker process, or hangs (up to 120 s)."""
    with open(log, "a") as out:
        out.write(f"{x} {os.getpid()}-{threading.get_ident()}\n")
    if what == "raises" and x == FAILS:
        raise ValueError(f"item {x} is bad")
    if what == "exits" and x == EXITS:
        os._exit(3)
    if what == "hangs" and x == HANGS:
        time.sleep(120)
    time.sleep(0.002)
    return x * x


def calls(log: Path) -> list[tuple[int, str]]:
    return [(int(x), where) for x, where in (line.split() for line in log.read_text().splitlines())]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    """2 workers of SPREAD_MIN_THREADS threads each."""
    with pytest.MonkeyPatch.context() as patch:  # the workers' slots, and those dead processes leave, stay here
        patch.setenv("HPCBRIDGE_SLOT_DIRECTORY", str(tmp_path_factory.mktemp("slots")))
        with module_bridge(tmp_path_factory, 2, cpus_per_task=SPREAD_MIN_THREADS) as attached:
            yield attached


def test_a_worker_with_many_threads_shares_each_of_its_few_chunks_among_them_and_each_item_runs_once(
        cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    assert set(bridge.client.nthreads().values()) == {SPREAD_MIN_THREADS}
    log = tmp_path / "calls.log"
    items = list(range(3000))
    run = bridge.map(logged, items, args=(str(log),), name="spread", progress=False)
    assert bridge.gather(run, progress=False) == [x * x for x in items]
    ran = calls(log)
    counts = collections.Counter(x for x, _ in ran)
    assert sorted(counts) == items and set(counts.values()) == {1}, "an item ran twice or not at all"
    # The warm-up's two items per worker and a probe or two, then four chunks per worker: not one task per
    # thread (32) or more.
    assert len([bounds for bounds in run.bounds if bounds[1] - bounds[0] > 100]) == 4 * 2, run.bounds
    assert len(run.bounds) <= 2 + MAX_PROBES + 4 * 2, run.bounds
    where = dict(ran)
    by_process = collections.defaultdict(set)
    for low, high in run.bounds:
        if high - low > 100:
            threads = {where[x] for x in range(low, high)}
            assert len({thread.split("-")[0] for thread in threads}) == 1  # a chunk's items stay on its worker
            by_process[next(iter(threads)).split("-")[0]] |= threads
    # Each worker's items ran on all its threads (and those of the chunks waiting their turn), not one per chunk.
    assert len(by_process) == 2 and all(len(threads) >= SPREAD_MIN_THREADS for threads in by_process.values()), {
        process: len(threads) for process, threads in by_process.items()}


def test_an_item_that_raises_in_a_spread_chunk_is_named_and_every_other_result_comes_back(
        cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    log = tmp_path / "calls.log"
    run = bridge.map(misbehaves, range(3000), args=(str(log), "raises"), name="spread-raises", progress=False)
    with pytest.raises(ItemError) as failed:
        bridge.gather(run, progress=False)
    assert failed.value.index == FAILS and "ValueError: item 1234 is bad" in str(failed.value)
    assert failed.value.results == [None if x == FAILS else x * x for x in range(3000)]
    counts = collections.Counter(x for x, _ in calls(log))
    assert sorted(counts) == list(range(3000)) and set(counts.values()) == {1}
    bridge.release("spread-raises")


def test_an_item_that_ends_its_worker_in_a_spread_chunk_is_named_and_every_other_result_comes_back(
        cluster, tmp_path: Path) -> None:
    """The first death leaves many items running in that process (the chunk's threads), so the item is not
    blamed yet; the chunk's retry runs on one thread and notes each item, and the item running at both
    deaths is failed. The dying process keeps what its threads had computed (os._exit), so the retries compute
    only the rest: every other item runs once.

    The chunks that died with the killer's are retried beside its retry, each from where it was: they take
    turns (attempts.apart), else one of them is often in the very item it was in at the first death when the
    second comes, and is failed too (most maps after a cluster's first failed so). Three maps in a row."""
    _, bridge = cluster
    for attempt in range(3):
        log = tmp_path / f"calls-{attempt}.log"
        name = f"spread-exits-{attempt}"
        run = bridge.map(misbehaves, range(3000), args=(str(log), "exits"), name=name, progress=False)
        with pytest.raises(ItemError) as failed:
            bridge.gather(run, timeout=240, progress=False)
        error = failed.value
        assert type(error).__name__ == "ItemKilledWorker" and error.index == EXITS, str(error)
        assert "exited with status 3" in str(error) and "each of the 2 times a worker process died" in str(error)
        assert sorted(error.errors) == [EXITS] and error.missing == [], (attempt, str(error))
        assert error.results == [None if x == EXITS else x * x for x in range(3000)]
        counts = collections.Counter(x for x, _ in calls(log))
        assert sorted(counts) == list(range(3000))
        assert counts[EXITS] == 2, attempt  # run on two workers, not a third
        # Every other item ran once, except those another thread was in when a process ended: each of those ran
        # last on its thread in a process that ran EXITS, and once more after.
        ran = calls(log)
        dead = {where.split("-")[0] for x, where in ran if x == EXITS}
        last_on_thread = {where: x for x, where in ran}
        first_run = {}
        for x, where in ran:
            first_run.setdefault(x, where)
        again = [x for x, count in counts.items() if count > 1 and x != EXITS]
        assert all(counts[x] == 2 and first_run[x].split("-")[0] in dead and last_on_thread[first_run[x]] == x
                   for x in again), [(x, counts[x], first_run[x]) for x in again]
        bridge.release(name)
        bridge.wait_for_workers(2, timeout=60)


def test_an_item_past_its_timeout_in_a_spread_chunk_is_named_at_once_and_every_other_result_comes_back(
        cluster, tmp_path: Path) -> None:
    """item_timeout ends the worker process; the thread's slot says which item ran past it, so the retry
    fails that item without running it again."""
    _, bridge = cluster
    log = tmp_path / "calls.log"
    run = bridge.map(misbehaves, range(3000), args=(str(log), "hangs"), name="spread-hangs", item_timeout=5,
                     progress=False)
    with pytest.raises(ItemError) as failed:
        bridge.gather(run, timeout=120, progress=False)
    error = failed.value
    assert type(error).__name__ == "ItemTimedOut" and error.index == HANGS, str(error)
    assert error.results == [None if x == HANGS else x * x for x in range(3000)]
    counts = collections.Counter(x for x, _ in calls(log))
    assert sorted(counts) == list(range(3000)) and set(counts.values()) == {1}  # kept as the process ended
    bridge.release("spread-hangs")
    bridge.wait_for_workers(2, timeout=60)
