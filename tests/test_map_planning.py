"""How a map of tiny items is planned and run on a worker: few large chunks, few probe rounds, a tight loop.

Unit tests without a cluster (the cluster-backed behaviour is in test_bridge_map.py); nothing here is timed.
"""

from __future__ import annotations

import operator

from hpcbridge.client import planning
from hpcbridge.client.planning import plan_chunks
from hpcbridge.cluster.chunks import ChunkTask, run_chunk


def covers(bounds: list[tuple[int, int]], start: int, stop: int) -> bool:
    return bounds[0][0] == start and bounds[-1][1] == stop and all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))


def test_a_map_of_little_work_is_one_chunk_per_thread() -> None:
    bounds = plan_chunks(4, 200_004, threads=2, seconds_per_item=2e-6)  # 0.4 s of work by the estimate
    assert covers(bounds, 4, 200_004)
    assert bounds == [(4, 100_004), (100_004, 200_004)]
    assert len(plan_chunks(0, 3, threads=8, seconds_per_item=0.01)) == 3  # never an empty chunk


def test_tiny_items_go_in_chunks_of_many_task_costs_but_every_thread_gets_work() -> None:
    per_item = 1e-7
    bounds = plan_chunks(0, 50_000_000, threads=2, seconds_per_item=per_item)  # 5 s of work
    assert covers(bounds, 0, 50_000_000)
    assert min(high - low for low, high in bounds[:-1]) * per_item >= planning.SHORTEST_CHUNK_SECONDS  # the last: what is left
    assert max(high - low for low, high in bounds) * per_item <= planning.TARGET_CHUNK_SECONDS
    many = plan_chunks(0, 10_000_000, threads=64, seconds_per_item=per_item)  # 1 s over 64 threads
    assert covers(many, 0, 10_000_000) and len(many) >= 64


def test_a_probe_is_sized_from_the_estimate_within_a_share_of_what_remains() -> None:
    assert planning._probe_size(1e-7, 10**6, threads=2) == 10**6 // (planning.CHUNKS_PER_THREAD * 2)
    assert planning._probe_size(1e-7, 10**9, threads=2) * 1e-7 >= planning.PROBE_SECONDS
    assert planning._probe_size(1.0, 10**6, threads=2) == 20  # slow items: ten times the warm-up
    assert planning._probe_size(1e-3, 30, threads=2) >= 1


class Done:
    """A finished chunk future as _probe sees it."""

    def __init__(self, key: str, result: tuple) -> None:
        self.key, self._result, self.status = key, result, "finished"

    def done(self) -> bool:
        return True

    def result(self) -> tuple:
        return self._result


class NoWaits:
    """A client whose waits return at once (the futures are done already); counts them."""

    def __init__(self) -> None:
        self.waits = 0

    def sync(self, fn) -> None:
        self.waits += 1

    def scheduler_info(self, **_: object) -> dict:
        return {"workers": {}}  # no worker to reach directly: results come through the scheduler

    def gather(self, future: Done, direct: bool | None = None) -> tuple:
        return future.result()


def probe_with(seconds_per_call: float, n: int, threads: int = 2) -> tuple[list[tuple[int, int]], int, float]:
    submitted: list[tuple[int, int]] = []

    def submit(chunks: list[tuple[int, int]]) -> list[Done]:
        done = []
        for low, high in chunks:
            submitted.append((low, high))
            done.append(Done(f"k{len(submitted)}", ([], {}, seconds_per_call * (high - low), seconds_per_call)))
        return done

    client = NoWaits()
    position, per_item = planning.probe(client, submit, n, threads)
    assert position == submitted[-1][1]
    return submitted, client.waits, per_item


def test_a_small_map_is_planned_from_the_warm_up_without_further_probes() -> None:
    submitted, waits, per_item = probe_with(2e-6, 200_000)
    assert submitted == [(0, 2), (2, 4)] and waits == 1 and per_item == 2e-6


def test_a_large_map_of_tiny_items_needs_one_probe_after_the_warm_up() -> None:
    submitted, waits, per_item = probe_with(2e-6, 50_000_000)
    assert len(submitted) == 3 and waits == 2  # warm-ups, then one probe long enough to measure
    low, high = submitted[-1]
    assert (high - low) * per_item >= planning.PROBE_SECONDS


def test_warm_ups_that_hold_every_item_are_not_waited_for() -> None:
    submitted, waits, _ = probe_with(1.0, 3, threads=2)
    assert submitted == [(0, 2), (2, 3)] and waits == 0


def test_the_worker_loop_runs_each_item_once_and_goes_on_after_errors() -> None:
    calls: list[int] = []

    def fn(item: int, offset: int) -> int:
        calls.append(item)
        if item in (0, 3):
            raise ValueError(f"bad {item}")
        if item == 5:
            raise StopIteration  # would end map() quietly
        return item + offset

    values, errors, *_ = run_chunk(ChunkTask("loop", fn, list(range(8)), 10, False), 100)
    assert calls == list(range(8))
    assert values == [None, 101, 102, None, 104, None, 106, 107]
    assert sorted(errors) == [10, 13, 15]
    assert errors[13][:2] == ("3", "ValueError: bad 3") and "bad 3" in errors[13][2]
    assert "StopIteration" in errors[15][1]
    assert run_chunk(ChunkTask("loop", operator.neg, range(0), 0, False))[:2] == ([], {})


def test_the_worker_loop_calls_the_users_function_itself_not_a_wrapper_per_item(monkeypatch) -> None:
    """A Python frame per item (the shipping wrapper's ``__call__``) cost more than ``x + 1`` itself."""
    from hpcbridge import functions

    def no_wrapper_call(*args, **kwargs):
        raise AssertionError("the wrapper was called for an item")

    monkeypatch.setattr(functions.ShippedFunction, "__call__", no_wrapper_call)
    monkeypatch.setattr(functions.SpreadItems, "__call__", no_wrapper_call)
    shipped = functions.ShippedFunction(operator.sub)
    assert list(functions.per_item_calls(shipped, [5, 6], [1])) == [4, 5]
    assert list(functions.per_item_calls(functions.SpreadItems(shipped), [(5, 1), (9, 2)], [])) == [4, 7]
    values, errors, *_ = run_chunk(ChunkTask("direct", functions.ShippedFunction(operator.neg), range(3), 0, False))
    assert (values, errors) == ([0, -1, -2], {})


def test_with_hundreds_of_threads_the_chunks_are_as_many_as_the_scheduler_can_hand_out() -> None:
    """Issue 25: 20 ms items, 0.8 s of work per thread. One task per thread at most a few times over, not the
    thousands of 30 ms chunks the scheduler (a few ms per task) hands out slower than the threads finish them."""
    for threads in (256, 1024):
        n = threads * 40
        bounds = plan_chunks(0, n, threads=threads, seconds_per_item=0.02)
        assert covers(bounds, 0, n)
        assert threads <= len(bounds) <= 1.1 * threads
    small = plan_chunks(0, 10_000, threads=2, seconds_per_item=0.01)  # at 2 threads the plan is unchanged
    assert min(high - low for low, high in small[:-1]) * 0.01 >= planning.SHORTEST_CHUNK_SECONDS
    assert len(small) >= 2 * planning.CHUNKS_PER_THREAD
