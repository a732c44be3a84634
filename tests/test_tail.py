"""A run's tail on a real local cluster: threads left idle take over the rest of chunks that run long
(:mod:`hpcbridge.client.tail`), and every item still runs exactly once.

The items wait (``time.sleep``: no CPU), and each logs which process and thread ran it, so the
test counts executions and sees where the rest of a long chunk went.
"""

from __future__ import annotations

import asyncio
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
from hpcbridge.client.tail import split_shares
from hpcbridge.job import submit as jobs
from tests.conftest import module_bridge

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the items below run on the cluster

HEAVY = range(600, 700)  # these items take 40 ms; the others 1 ms, as the map's probes measure


def uneven(x: int, log: str) -> int:
    time.sleep(0.04 if x in HEAVY else 0.001)
    with open(log, "a") as out:
        out.write(f"{x} {os.getpid()}-{threading.get_ident()}\n")
    return x * x


def slow_first(x: int, log: str) -> int:
    time.sleep(3.0 if x == 0 else 0.01)
    with open(log, "a") as out:
        out.write(f"{x} {os.getpid()}-{threading.get_ident()}\n")
    return -x


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    with module_bridge(tmp_path_factory, 2, cpus_per_task=4) as attached:  # 8 threads
        yield attached


def test_idle_threads_take_the_rest_of_chunks_that_run_long_and_each_item_runs_once(cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    log = tmp_path / "calls.log"
    items = list(range(2000))
    run = bridge.map(uneven, items, args=(str(log),), name="tail", progress=False)
    planned = list(run.bounds)
    assert bridge.gather(run, progress=False) == [x * x for x in items]
    lines = [line.split() for line in log.read_text().splitlines()]
    runs = collections.Counter(int(x) for x, _ in lines)
    assert sorted(runs) == items and set(runs.values()) == {1}, "an item ran twice or not at all"
    # The heavy items were planned as 1 ms ones, so a few chunks hold 4 s of them. Without the
    # hand-on each such chunk runs on its one thread to the end while the other threads idle.
    threads_per_chunk = []
    for low, high in planned:
        heavy = [x for x in range(low, high) if x in HEAVY]
        if len(heavy) >= 20:
            threads_per_chunk.append(len({where for x, where in lines if low <= int(x) < high}))
    assert threads_per_chunk, f"no planned chunk holds 20 heavy items: {planned}"
    assert max(threads_per_chunk) >= 3, (
        f"the rest of a long chunk stayed on its thread: threads per long chunk {threads_per_chunk}")
    assert len(run.bounds) > len(planned)


def test_a_cut_whose_answer_never_reaches_the_client_still_has_its_rest_computed_once(
        cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers cut the long chunks, but their answer (the rests) is lost on the way: too late for the
    client's bound on asking (a loaded machine), or the client interrupted meanwhile. Each cut chunk
    then comes back short, and its rest must still be computed, once."""
    from hpcbridge.client import tail

    _, bridge = cluster
    cut = tail._cut
    lost: list[str] = []

    async def cut_and_lose_the_answer(client, by_worker):
        lost.extend(await cut(client, by_worker))
        raise asyncio.TimeoutError("the workers answered after the client's bound")  # what client.sync raises then

    monkeypatch.setattr(tail, "_cut", cut_and_lose_the_answer)
    log = tmp_path / "calls.log"
    items = list(range(2000))
    run = bridge.map(uneven, items, args=(str(log),), name="tail-answer-lost", progress=False)
    assert bridge.gather(run, progress=False) == [x * x for x in items]
    assert lost, "no chunk was cut: the test shows nothing"
    runs = collections.Counter(int(line.split()[0]) for line in log.read_text().splitlines())
    assert sorted(runs) == items and set(runs.values()) == {1}, "an item ran twice or not at all"


def test_an_item_queued_behind_a_long_one_is_taken_by_an_idle_thread(cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    log = tmp_path / "calls.log"
    run = bridge.map(slow_first, range(8), args=(str(log),), chunk_size=2, name="behind", progress=False)
    assert bridge.gather(run, progress=False) == [-x for x in range(8)]
    lines = [line.split() for line in log.read_text().splitlines()]
    done = [int(x) for x, _ in lines]
    assert sorted(done) == list(range(8)), "an item ran twice or not at all"
    where = dict((int(x), thread) for x, thread in lines)
    # Item 1 shares item 0's chunk. Left there, it would run on item 0's thread once that 3 s item ends.
    assert done.index(1) < done.index(0) and where[1] != where[0], f"item 1 waited behind item 0: {lines}"


def test_a_run_s_tail_is_shared_out_by_the_work_left_in_each_chunk() -> None:
    running = [{"key": "long", "index": 99, "stop": 1100, "per_item": 0.01},   # 10 s left
               {"key": "short", "index": 0, "stop": 30, "per_item": 0.01},     # 0.29 s left
               {"key": "done", "index": 49, "stop": 50, "per_item": 0.01}]     # nothing after its running item
    # Every idle thread goes to the long chunk: six pieces of 1.7 s, none to pieces of the short one.
    assert split_shares(running, idle=6) == {"long": 6}
    running[0]["stop"] = 200  # 1 s left, the other 0.6 s: the pieces end about together
    running[1]["stop"] = 61
    assert split_shares(running, idle=6) == {"long": 4, "short": 2}
    assert split_shares(running, idle=0) == {}
    # The plan's estimate counts when it is higher than what a chunk took so far (a chunk on its first item).
    assert split_shares([{"key": "k", "index": 0, "stop": 100, "per_item": 0.0}], idle=2, planned_per_item=0.01) == {"k": 2}
    assert split_shares([{"key": "k", "index": 0, "stop": 100, "per_item": 0.0}], idle=2) == {}
    # One item behind one that has run for a second: it moves to an idle thread (it would wait a second or more).
    behind = [{"key": "k", "index": 5, "stop": 7, "per_item": 0.01, "seconds": 1.0}]
    assert split_shares(behind, idle=1) == {"k": 1}
    assert split_shares([{**behind[0], "seconds": 0.0}], idle=1) == {}  # behind a short one: it stays
