"""How a map's items are cut into chunks: measured, then planned so that every thread stays busy.

A Dask task costs about 2.5 ms of overhead here, so a million one-item tasks take most of an
hour. A run therefore groups items into *chunks*, one task each:

- The first chunks are probes of 1, 10, 100, ... items. Each chunk reports how long its items
  took on the worker (leaving out the first call, which pays for imports), and the probes stop as
  soon as one ran long enough to measure.
- The rest is planned from that per-item time with guided self-scheduling
  (:func:`plan_chunks`): each chunk takes a quarter of a thread's fair share of what remains,
  capped at :data:`TARGET_CHUNK_SECONDS` of work, so chunks shrink towards the end and the last
  ones are short. The scheduler hands chunks to workers as threads free up, largest first, so
  every worker stays busy until the end, whatever the items cost.
- Workers of many threads (:data:`SPREAD_MIN_THREADS` or more) get a few *spread* chunks each
  instead (:func:`plan_spread`), whose items the worker's threads share among themselves
  (:mod:`hpcbridge.cluster.spread`): the scheduler hands out tasks one at a time, and at a
  thousand threads one task per thread already costs it seconds.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from distributed import Client, Future

from hpcbridge.client.futures import gather_results, wait_for


TARGET_CHUNK_SECONDS = 0.25


SHORTEST_CHUNK_SECONDS = 0.03  # ten times the ~3 ms of CPU one task costs across all processes here
# What one task costs the scheduler (2.3-2.5 ms measured here, a little more with TLS). It hands out
# tasks one after another, so with T threads waiting a chunk shorter than T of these leaves threads
# idle between chunks: at 256 threads, 20 ms items planned as 0.03 s chunks made 3,203 tasks for a
# 0.8 s map and took 9.7 s.
SCHEDULER_SECONDS_PER_TASK = 0.003
# The share of a map's time the scheduler may spend handing out its planned chunks. At full share it
# does nothing else (and a loaded node makes a task cost it several times more): the rest of the
# work's balance is left to the run's tail (hpcbridge.client.tail), which asks for tasks only for
# threads that are idle.
SCHEDULER_SHARE = 0.25


CHUNKS_PER_THREAD = 4


PROBE_SECONDS = 0.02


PROBE_WAIT = 2.0


PROBE_WAIT_COLD = 30.0


MAX_PROBES = 4


# A collected run teaches the next map of its function only when it timed at least this many
# items (first calls left out): a warm-up of a few items (as the benchmarks run to import
# libraries on every worker) is no sample of what the real run's items cost.
REMEMBERED_MIN_ITEMS = 100


# A map whose warm-up says it is at most this much work is planned at once, one chunk per thread.
# The warm-up times one call, which for a tiny item measured 3-7 us here against 0.1 us in a loop,
# so for tiny items this is usually a small fraction of it; and a wrong guess costs at most this
# much imbalance, while a probe costs a round trip to a worker (10-40 ms here).
FEW_CHUNKS_SECONDS = 2.0


# Per client: seconds per item that collected runs measured, by function and item type.
_ESTIMATES: weakref.WeakKeyDictionary[Client, dict[str, float]] = weakref.WeakKeyDictionary()


def plan_chunks(start: int, stop: int, threads: int, seconds_per_item: float,
                target_seconds: float = TARGET_CHUNK_SECONDS) -> list[tuple[int, int]]:
    """Split items ``[start, stop)`` into chunks that shrink towards the end (guided self-scheduling).

    A chunk takes ``remaining / (CHUNKS_PER_THREAD * threads)`` items, but at most
    ``target_seconds`` of work and at least :data:`SHORTEST_CHUNK_SECONDS` of it (and one item):
    a task costs milliseconds, so tiny items go in few large chunks. With many threads the shortest
    chunk is long enough for the scheduler to hand every thread one task in a small share of it
    (``threads * SCHEDULER_SECONDS_PER_TASK / SCHEDULER_SHARE``), so the number of tasks grows with
    the work and the scheduler's pace, not with the threads alone; items that cost more than
    planned are balanced at the run's tail (:mod:`hpcbridge.client.tail`). The shortest chunk is never
    more than a thread's fair share of all the items, so even a small map keeps every thread busy.
    A range of at most :data:`FEW_CHUNKS_SECONDS` of work, or of less than two shortest chunks per
    thread, is split evenly, one chunk per thread:
    balancing it finer would cost more in tasks than it could save, and an estimate from one
    call (all a warm-up gives) may be several times too high for a tiny item.

    >>> plan_chunks(0, 5, threads=2, seconds_per_item=1.0)
    [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    >>> plan_chunks(0, 100_000, threads=1, seconds_per_item=1e-4)[-9:-5]
    [(95782, 96837), (96837, 97628), (97628, 98221), (98221, 98666)]
    >>> plan_chunks(0, 200_000, threads=2, seconds_per_item=1e-6)
    [(0, 100000), (100000, 200000)]
    """
    per_item = max(seconds_per_item, 1e-9)
    fair_share = max(1, math.ceil((stop - start) / max(1, threads)))
    shortest_seconds = max(SHORTEST_CHUNK_SECONDS, threads * SCHEDULER_SECONDS_PER_TASK / SCHEDULER_SHARE)
    shortest = min(max(1, int(shortest_seconds / per_item)), fair_share)
    if per_item * (stop - start) <= FEW_CHUNKS_SECONDS or 2 * shortest > fair_share:
        # Little work, or too little per thread for two chunks each: one chunk per thread. A few
        # chunks more than threads would be a second round of whole chunks (twice the time).
        return [(low, min(stop, low + fair_share)) for low in range(start, stop, fair_share)]
    longest = max(shortest, int(max(target_seconds, shortest_seconds) / per_item))
    bounds, low = [], start
    while low < stop:
        size = math.ceil((stop - low) / (CHUNKS_PER_THREAD * max(1, threads)))
        size = min(max(size, shortest), longest, stop - low)
        bounds.append((low, low + size))
        low += size
    return bounds


# Workers with at least this many threads each get spread chunks (hpcbridge.cluster.spread): a few tasks per
# worker, whose items the worker's threads share, instead of a task per thread (or more).
SPREAD_MIN_THREADS = 16
# Spread chunks per worker, interleaved over the items (chunk i on worker i % workers): items whose cost
# rises or falls along the list even out over a worker's chunks, which its threads take one after another.
SPREAD_CHUNKS_PER_WORKER = 4
# Items shorter than this are not spread: a spread chunk's threads call each item from Python (~1 us each
# with its notes), where a chunk's one thread calls them in a C loop (~0.1 us); and threads gain nothing for
# items that hold the GIL throughout.
SPREAD_MIN_ITEM_SECONDS = 1e-4
# The longest a spread chunk runs on its worker's threads, by the estimate: a chunk is saved when it ends, so a
# worker that the walltime (or a failure) ends loses at most this much of its threads' work, and a draining
# worker does not start a chunk it cannot finish (hpcbridge.cluster.drain): longer maps get more chunks.
SPREAD_CHUNK_SECONDS = 10.0


def plan_spread(low: int, high: int, nthreads: dict[str, int], per_item: float) -> list[tuple[int, int]] | None:
    """Items ``[low, high)`` as spread chunks (:mod:`hpcbridge.cluster.spread`), :data:`SPREAD_CHUNKS_PER_WORKER`
    per worker, or more, so that none runs longer than :data:`SPREAD_CHUNK_SECONDS` on the fewest threads a
    worker has; None when workers have too few threads for it to pay (:data:`SPREAD_MIN_THREADS`), the items
    are too short (:data:`SPREAD_MIN_ITEM_SECONDS` each, by the estimate ``per_item``) or there are fewer
    items than threads.

    The chunks are not bound to workers: the scheduler gives each to the worker with the fewest tasks per
    thread, so consecutive chunks go to different workers and no worker holds only the items at one end
    (and a chunk whose worker died goes to another).

    >>> plan_spread(0, 1000, {"a": 16, "b": 16}, 0.01)[:3]
    [(0, 125), (125, 250), (250, 375)]
    >>> plan_spread(0, 1000, {"a": 4, "b": 16}, 0.01), plan_spread(0, 1000, {"a": 16, "b": 16}, 1e-6)
    (None, None)
    >>> len(plan_spread(0, 100_000, {"a": 16, "b": 16}, 0.1))  # 625 s per thread: chunks of 10 s
    63
    """
    if (not nthreads or min(nthreads.values()) < SPREAD_MIN_THREADS or high - low < sum(nthreads.values())
            or per_item < SPREAD_MIN_ITEM_SECONDS):
        return None
    longest = SPREAD_CHUNK_SECONDS * min(nthreads.values()) / per_item  # items
    pieces = max(SPREAD_CHUNKS_PER_WORKER * len(nthreads), math.ceil((high - low) / longest))
    edges = [low + round((high - low) * number / pieces) for number in range(pieces + 1)]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]


def plan(low: int, high: int, chunk_size: int | None, threads: int, per_item: float) -> list[tuple[int, int]]:
    if chunk_size:
        return [(lo, min(high, lo + chunk_size)) for lo in range(low, high, chunk_size)]
    return plan_chunks(low, high, threads, per_item)


def probe(client: Client, submit: Callable[[list[tuple[int, int]]], list[Future]], n: int,
          threads: int, workers: int | None = None) -> tuple[int, float]:
    """Measure the time per item with probe chunks; return (next item, seconds per item).

    Every worker process (``workers``, default one per thread) first gets a probe of two items. The
    first call on a fresh worker pays for its imports (seconds for SymPy or Numba on a busy machine),
    so only the second call is timed, and warming every worker at once costs nothing: they would idle
    otherwise. One probe per process warms all its threads (they share its imports); one per thread
    cost the scheduler a task each (256 at 256 threads, as many as the whole map's plan). The first probe to
    finish gives the estimate; if none finishes within :data:`PROBE_WAIT_COLD` the items are slow.
    When that estimate says the rest of the map is at most :data:`FEW_CHUNKS_SECONDS` of work, the
    rest is planned from it at once: the map is only a few chunks, and waiting for probes would
    cost more than an imprecise estimate can. Otherwise, while the timed calls ran too briefly to
    measure, a probe sized from the estimate to run :data:`PROBE_SECONDS` follows. ``submit`` submits
    a list of ``(first, end)`` chunks at once and returns their futures.
    """
    bounds = [(low, min(n, low + 2)) for low in range(0, min(n, 2 * (workers or threads)), 2)]
    warmups = submit(bounds)
    sizes = {future.key: high - low for future, (low, high) in zip(warmups, bounds)}
    position = bounds[-1][1] if bounds else 0
    if position >= n:
        return position, 0.0  # the warm-ups hold every item: nothing left to plan
    wait_for(client, warmups, PROBE_WAIT_COLD, first=True)
    finished = [future for future in warmups if future.done()]
    if not finished:
        return position, PROBE_WAIT_COLD / 2  # slow items: at least this long each
    if finished[0].status != "finished":
        return position, TARGET_CHUNK_SECONDS  # it failed; gather will say why; keep chunks small
    per_item, measured = _timing(gather_results(client, finished[0]), sizes[finished[0].key])
    for _ in range(MAX_PROBES):
        if measured >= PROBE_SECONDS or position >= n or per_item * (n - position) <= FEW_CHUNKS_SECONDS:
            break
        high = min(n, position + _probe_size(per_item, n - position, threads))
        (future,) = submit([(position, high)])
        wait_for(client, [future], PROBE_WAIT)
        if not future.done() or future.status != "finished":
            return high, per_item  # landed on a worker still busy or failing: keep the estimate
        per_item, measured = _timing(gather_results(client, future), high - position)
        position = high
    return position, per_item


def _probe_size(per_item: float, remaining: int, threads: int) -> int:
    """Items for a probe to run :data:`PROBE_SECONDS` by the estimate so far (at least 20, ten times
    the warm-up), but no more than a quarter of a thread's share of what remains.

    >>> _probe_size(1e-3, 10**6, 2), _probe_size(1e-7, 10**6, 2), _probe_size(1.0, 10**6, 2)
    (40, 125000, 20)
    """
    wanted = max(20, math.ceil(2 * PROBE_SECONDS / max(per_item, 1e-9)))
    return max(1, min(wanted, remaining // (CHUNKS_PER_THREAD * max(1, threads))))


def _timing(chunk_result: tuple, count: int) -> tuple[float, float]:
    """(seconds per item, seconds measured) of a finished chunk, leaving out its first call."""
    seconds, first = chunk_result[2], chunk_result[3]
    if count < 2:
        return seconds, seconds
    return (seconds - first) / (count - 1), seconds - first


def estimate_key(identity: str, items: Sequence[Any]) -> str:
    """What a run's measured time per item is remembered under: the function (``function_identity``)
    and its items' type."""
    kind = type(items[0]).__qualname__ if len(items) else "nothing"
    return f"{identity}@{kind}"


def remembered_estimate(client: Client, key: str) -> float | None:
    """Seconds per item that the last collected run of this function over items of this type measured.

    A map of a function this client has seen plans its chunks from that at once instead of
    sending warm-up items first and waiting for one to come back: the warm-up costs a round trip
    through the scheduler (~7 ms of the ~35 ms a map of 200,000 tiny items takes here). Batching
    libraries do the same (joblib keeps the batch size its earlier batches measured). When the
    items cost much more than last time, the chunks are fewer and longer than the planner would
    have made them (still one per thread at least), and the next run plans from the new figure.
    Only a run that timed :data:`REMEMBERED_MIN_ITEMS` items or more is remembered, each chunk's
    first call left out.
    """
    return _ESTIMATES.get(client, {}).get(key)


def remember_estimate(client: Client, key: str | None, bounds: list[tuple[int, int]], gathered: list[tuple],
                      finished: list[int]) -> None:
    """Keep, under ``key``, the seconds per item that the computed chunks (``finished``, of a run cut at ``bounds``)
    measured (see :func:`remembered_estimate`)."""
    if key is None:
        return
    seconds, count = 0.0, 0
    for i, (_, errors, chunk_seconds, first, *_) in zip(finished, gathered):
        low, high = bounds[i]
        if chunk_seconds > 0 and not errors and high - low >= 2:  # 0 s: read back from disk, not computed
            # Each chunk's first call is left out, as the probe does: on a fresh worker it pays
            # for imports (seconds), which would make every later chunk one item long.
            seconds, count = seconds + chunk_seconds - first, count + (high - low - 1)
    if count >= REMEMBERED_MIN_ITEMS:
        _ESTIMATES.setdefault(client, {})[key] = max(seconds, 0.0) / count
