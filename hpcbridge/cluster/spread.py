"""A chunk spread over its worker's threads: one task whose items that worker's threads pull block by block.

Why: the scheduler hands out tasks one after another, 0.4-3 ms each here, so with a thousand
threads a map of one task per thread spends seconds there before the last thread starts (the
static split's 1,024 tasks took 1.4 s more than their 0.8 s of work), and balancing uneven items
with more tasks costs more of the same. A chunk whose task carries ``threads`` > 1
(:class:`hpcbridge.cluster.chunks.ChunkTask`) costs the scheduler one task, and the worker's
threads balance its items among themselves as they free up, at no cost to the scheduler. The
planner makes a few such chunks per worker when workers have many threads
(:func:`hpcbridge.client.planning.plan_spread`).

How: the task's own thread and ``threads - 1`` threads of a pool per worker process (as many
threads as the worker has, shared by the spread chunks running there, first come first served)
take blocks of items in order, each block a guided share of what is left, and call the items one
by one. Each pulling thread runs as an attempt of the chunk's task
(:class:`hpcbridge.cluster.attempts.Attempt`, ``spread=True``) whose slot says which item it is in,
so the watchdog ends an item past ``item_timeout`` by ending the worker process, and the retry
fails that item without running it (the slot says which); an item that ends its worker is named
after a second death (the first left many items running in that process). Blocks are handed out
in order, so the items before the first block not handed out are all computed once the running
blocks end: a released run stops handing out blocks, and the chunk returns the items up to the
first gap.

After its worker process died, a spread chunk's retry runs on one thread (exact, as every retry
does). When the process ended by ``os._exit``, SIGTERM (how a nanny ends a worker over its memory
limit), an item's timeout or a released run, the threads' computed items were kept as it ended
(:meth:`Spread.keep_computed`, from :func:`hpcbridge.cluster.attempts.keep_all`) and the retry computes only
the others; after a SIGKILL or a crash nothing was kept, and it computes them again.

What a spread chunk does not do: its tail is not cut by a waiting client
(:mod:`hpcbridge.client.tail`), and a stuck item does not hand the chunk's rest to other tasks:
its other threads go on with it.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time
from typing import Any

from hpcbridge import functions
from hpcbridge.cluster import attempts

BLOCK_SECONDS = 0.02  # the least work a thread takes at once (a block costs a lock and a little bookkeeping)
GUIDED_SHARE = 4  # a block is at most 1/GUIDED_SHARE of a thread's share of what is left: smaller towards the end

_POOL: concurrent.futures.ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


class Spread:
    """One spread chunk on this worker: its items, the next block to hand out, what each block has computed."""

    def __init__(self, task: Any, key: str, threads: int, per_item: float) -> None:
        self.task, self.key, self.run, self.n, self.threads = task, key, task.run, len(task.items), max(1, threads)
        self.smallest = max(1, int(BLOCK_SECONDS / per_item)) if per_item > 0 else 1
        self.next = 0  # the first item not handed out yet
        self.stopped = False
        # first item -> (end, values, errors): a block's lists grow as its thread computes its items
        self.blocks: dict[int, tuple[int, list[Any], dict[int, tuple]]] = {}
        self.lock = threading.Lock()

    def take(self) -> tuple[int, int] | None:
        """The next block (chunk-relative first item and end), None when none is left or handing out stopped."""
        with self.lock:
            if self.stopped or self.next >= self.n:
                return None
            left = self.n - self.next
            size = min(left, max(self.smallest, math.ceil(left / (GUIDED_SHARE * self.threads))))
            low = self.next
            self.next += size
            self.blocks[low] = (low + size, [], {})
            return low, low + size

    def stop(self) -> None:
        with self.lock:
            self.stopped = True

    def values(self) -> tuple[list[Any], dict[int, tuple]]:
        """The values and errors of the items up to the first that no block has computed."""
        values: list[Any] = []
        errors: dict[int, tuple] = {}
        at = 0
        while at in self.blocks:
            end = self.blocks[at][0]
            taken, taken_errors = self._computed(at)
            values.extend(taken)
            errors.update(taken_errors)
            if len(taken) < end - at:
                break
            at = end
        return values, errors

    def _computed(self, low: int) -> tuple[list[Any], dict[int, tuple]]:
        """What the block from ``low`` has computed so far: a consistent copy of its values and their errors
        while its thread may still append (each copy is one C call)."""
        _, block_values, block_errors = self.blocks[low]
        taken = list(block_values)
        return taken, {i: e for i, e in dict(block_errors).items() if i < self.task.start + low + len(taken)}

    def keep_computed(self) -> None:
        """Keep what the chunk's threads have computed (this process is about to end) beside the run, for its
        retry: the values up to the first item not computed, and the runs of items computed after it, by
        their first item (chunk-relative). The retry computes only the others (see
        :func:`hpcbridge.cluster.attempts.investigate`)."""
        directory = self.task.directory
        if directory is None:
            return
        values, errors = self.values()
        later = []
        for low in sorted(dict(self.blocks)):
            taken, taken_errors = self._computed(low) if low > len(values) else ([], {})
            if taken:
                later.append((low, taken, taken_errors))
        start = self.task.start
        directory.keep("kept", start, start + self.n, self.key, (values, errors, later))


def compute(task: Any, key: str, args: list[Any], extra: tuple[Any, ...]) -> tuple[list, dict, float, float, int]:
    """Run ``task`` (a spread chunk) on up to ``task.threads`` threads of this worker; return its values, errors,
    the items' seconds added up (what one thread would have taken: the planner's measure of an item), the
    first call's seconds, and how many items were called."""
    n = len(task.items)
    per_item = task.expected_seconds / n if n else 0.0
    worker = attempts.current_worker()
    spread = Spread(task, key, min(task.threads, _threads_of(worker)), per_item)
    seconds = [0.0]
    first = [-1.0]
    called = [0]
    tally = threading.Lock()

    def pull(number: int) -> None:
        attempt: attempts.Attempt | None = None
        try:
            while (block := spread.take()) is not None:
                low, high = block
                if attempt is None:
                    attempt = attempts.begin(attempts.Attempt(key, task.run, task.start, task.items, extra,
                                                              task.item_timeout, per_item, None, dask_worker=worker,
                                                              spread=True))
                started = time.perf_counter()
                _, values, errors = spread.blocks[low]
                first_call = _call_block(task, args, attempt, low, high, values, errors)
                took = time.perf_counter() - started
                with tally:
                    seconds[0] += took
                    called[0] += len(values)
                    if first[0] < 0 <= first_call:
                        first[0] = first_call
        finally:
            if attempt is not None:
                attempt.finish_loop()
                attempts.end(attempt)

    with attempts.spreading(key, spread):  # a released run stops it (attempts.stop_run)
        helpers = [_pool(worker).submit(pull, number) for number in range(1, min(spread.threads, n))]
        pull(0)
        for helper in helpers:  # nothing is left to hand out: helpers still queued behind other chunks' need not run
            if not helper.cancel():
                helper.result()
    values, errors = spread.values()
    return values, errors, seconds[0], max(first[0], 0.0), called[0]


def _call_block(task: Any, args: list[Any], attempt: attempts.Attempt, low: int, high: int, values: list[Any],
                errors: dict[int, tuple]) -> float:
    """Call the items ``low..high-1`` (chunk-relative) one by one, through the attempt's tracked iterator (so
    the watchdog sees each), appending each value to ``values`` as it comes (what
    :meth:`Spread.keep_computed` keeps should the process end); an item that raises gets its error in
    ``errors`` and None. Returns the first call's seconds (-1 when none was called).

    Once the process has begun to end (:func:`hpcbridge.cluster.attempts.hold_if_ending`), the thread
    takes no further item, and an item that ends after that is left as it was then: running, its
    value not kept (the retry runs it again, and a death is not pinned on an item just because the
    others stopped).
    """
    first = -1.0
    calls = functions.per_item_calls(task.fn, attempt.tracked(low, high), args)
    while True:
        attempts.hold_if_ending()
        started = time.perf_counter()
        position = low + len(values)
        attempt.note_item(position, running=True)
        error: tuple | None = None
        try:
            value = next(calls)
        except StopIteration:
            if attempt.fetched() <= low + len(values):
                attempt.note_item(position, running=False)  # it did not begin: no item left
                break
            value = None  # the item was taken and the function raised StopIteration
            error = attempts.item_error(task.items[position], None)
        except BaseException as raised:  # noqa: BLE001 -- SystemExit too: the item's error, as in a chunk
            value = None
            error = attempts.item_error(task.items[position], raised)
        attempts.hold_if_ending()
        if error is not None:
            errors[task.start + position] = error
        values.append(value)
        attempt.note_item(position, running=False)
        if first < 0:
            first = time.perf_counter() - started
    return first


def _threads_of(worker: Any) -> int:
    """The worker's threads (1 outside a worker: a test calling a chunk directly)."""
    return int(getattr(getattr(worker, "state", None), "nthreads", 0) or getattr(worker, "nthreads", 0) or 1)


def _pool(worker: Any) -> concurrent.futures.ThreadPoolExecutor:
    """This process's pool of helper threads for spread chunks: as many as the worker has threads."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = concurrent.futures.ThreadPoolExecutor(max_workers=_threads_of(worker),
                                                          thread_name_prefix="hpcbridge-spread")
        return _POOL
