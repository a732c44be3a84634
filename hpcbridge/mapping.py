"""Map a function over many items as a few well-sized tasks, and keep the results on the cluster.

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

Every chunk is submitted before :meth:`~hpcbridge.bridge.Bridge.map` returns, and the run is
published on the scheduler under its name (``client.publish_dataset``): the scheduler then holds
the results for the run, not for the client, so a client that disconnects or dies loses nothing;
another one attaches through the scheduler file and collects them with ``results(name)``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from distributed import Client, Future
from distributed.client import FutureCancelledError

from hpcbridge import broadcast as broadcasts
from hpcbridge.progress import Progress

TARGET_CHUNK_SECONDS = 0.25
SHORTEST_CHUNK_SECONDS = 0.01
CHUNKS_PER_THREAD = 4
PROBE_SECONDS = 0.02
PROBE_WAIT = 2.0
PROBE_WAIT_COLD = 30.0
MAX_PROBES = 4
RUN_MARKER = "hpcbridge-run"

# Worker-side: items executed per run, to show that nothing ran twice.
_EXECUTED: dict[str, int] = {}


class ItemError(Exception):
    """A user function failed on one item; carries the item's index, the item and the remote traceback."""

    def __init__(self, run: str, index: int, item: str, worker: str, error: str, remote_traceback: str) -> None:
        super().__init__(run, index, item, worker, error, remote_traceback)
        self.run, self.index, self.item, self.worker = run, index, item, worker
        self.error, self.remote_traceback = error, remote_traceback

    def __str__(self) -> str:
        return (f"item {self.index} of run {self.run!r} failed on {self.worker}: {self.error}\n"
                f"the item: {self.item}\nremote traceback:\n{self.remote_traceback}")


class RunError(RuntimeError):
    """A whole chunk of a run failed outside the user function (e.g. its worker died, or unpickling)."""


@dataclass(frozen=True)
class ChunkTask:
    """What one chunk task gets: the function, a slice of the items, where the slice starts.

    The items travel inside this object so that Dask does not walk through every item of a list
    argument looking for futures.
    """

    run: str
    fn: Callable[..., Any]
    items: Sequence[Any]
    start: int
    stack: bool


def run_chunk(task: ChunkTask, *extra: Any) -> tuple[Any, dict[int, tuple[str, str, str]], float, float]:
    """Worker side: ``fn(item, *extra)`` for each item; broadcast handles become their objects.

    Returns the values (one array when stacking worked), the errors by item index (the item's
    repr, the error, the formatted traceback), the chunk's seconds and its first call's seconds.
    """
    args = [broadcasts.value(arg.name) if isinstance(arg, broadcasts.Broadcast) else arg for arg in extra]
    fn = task.fn
    values: list[Any] = []
    errors: dict[int, tuple[str, str, str]] = {}
    started = time.perf_counter()
    first = 0.0
    for offset, item in enumerate(task.items):
        try:
            values.append(fn(item, *args))
        except Exception as error:
            values.append(None)
            errors[task.start + offset] = (_short_repr(item), f"{type(error).__name__}: {error}",
                                           traceback.format_exc())
        if offset == 0:
            first = time.perf_counter() - started
    seconds = time.perf_counter() - started
    _EXECUTED[task.run] = _EXECUTED.get(task.run, 0) + len(task.items)
    if task.stack and not errors:
        values = _stack_if_arrays(values)
    return values, errors, seconds, first


def executed_items() -> dict[str, int]:
    """Worker side: how many items this worker process has run, per run name."""
    return dict(_EXECUTED)


def _short_repr(item: Any, limit: int = 300) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _stack_if_arrays(values: list[Any]) -> Any:
    import numpy as np

    if values and all(isinstance(v, (np.ndarray, np.generic, int, float, complex)) for v in values):
        try:
            return np.stack([np.asarray(v) for v in values])
        except ValueError:
            pass
    return values


def plan_chunks(start: int, stop: int, threads: int, seconds_per_item: float,
                target_seconds: float = TARGET_CHUNK_SECONDS) -> list[tuple[int, int]]:
    """Split items ``[start, stop)`` into chunks that shrink towards the end (guided self-scheduling).

    A chunk takes ``remaining / (CHUNKS_PER_THREAD * threads)`` items, but at most
    ``target_seconds`` of work and at least :data:`SHORTEST_CHUNK_SECONDS` of it (and one item).

    >>> plan_chunks(0, 5, threads=2, seconds_per_item=1.0)
    [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    >>> plan_chunks(0, 100, threads=1, seconds_per_item=0.001)[:4]
    [(0, 25), (25, 44), (44, 58), (58, 69)]
    """
    per_item = max(seconds_per_item, 1e-9)
    shortest = max(1, int(SHORTEST_CHUNK_SECONDS / per_item))
    longest = max(shortest, int(target_seconds / per_item))
    bounds, low = [], start
    while low < stop:
        size = math.ceil((stop - low) / (CHUNKS_PER_THREAD * max(1, threads)))
        size = min(max(size, shortest), longest, stop - low)
        bounds.append((low, low + size))
        low += size
    return bounds


@dataclass
class Run:
    """A map that the cluster is computing or holds: its name, its chunks, and their futures."""

    name: str
    n_items: int
    bounds: list[tuple[int, int]]
    futures: list[Future] = field(repr=False)
    function: str = ""

    def done_items(self) -> int:
        """How many items are computed (in finished chunks)."""
        return sum(hi - lo for (lo, hi), f in zip(self.bounds, self.futures) if f.done())

    def record(self) -> dict[str, Any]:
        """What the scheduler keeps under the run's name (the futures keep the results alive)."""
        return {RUN_MARKER: 1, "n_items": self.n_items, "bounds": self.bounds, "futures": self.futures,
                "function": self.function}

    @classmethod
    def from_record(cls, name: str, record: Any) -> Run:
        if not isinstance(record, dict) or RUN_MARKER not in record:
            raise KeyError(f"{name!r} is a published dataset, but not an hpcbridge run")
        return cls(name, record["n_items"], [tuple(b) for b in record["bounds"]], list(record["futures"]),
                   record.get("function", ""))


def new_run_name() -> str:
    """A run name that is unique and sorts by time: ``run-20260101-120000-1a2b3c``."""
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def start(client: Client, fn: Callable[..., Any], items: Sequence[Any], extra: Sequence[Any] = (),
          name: str | None = None, stack: bool = False, chunk_size: int | None = None) -> Run:
    """Submit ``fn(item, *extra)`` for every item as chunks, and publish the run under ``name``."""
    name = name or new_run_name()
    if name in client.list_datasets():
        raise KeyError(f"a run or dataset named {name!r} already exists on this cluster; "
                       "collect or release it first, or choose another name")
    if not (hasattr(items, "__len__") and hasattr(items, "__getitem__")):
        items = list(items)
    n = len(items)
    threads = max(1, sum(client.nthreads().values()))
    run = Run(name, n, [], [], getattr(fn, "__qualname__", repr(fn)))
    extra = tuple(extra)

    def submit(low: int, high: int) -> Future:
        task = ChunkTask(name, fn, items[low:high], low, stack)
        future = client.submit(run_chunk, task, *extra, key=f"{name}-{len(run.futures)}", pure=False)
        run.bounds.append((low, high))
        run.futures.append(future)
        return future

    try:
        position = 0
        if chunk_size:
            plan = [(lo, min(n, lo + chunk_size)) for lo in range(0, n, chunk_size)]
        else:
            position, per_item = _probe(client, submit, n, threads)
            plan = plan_chunks(position, n, threads, per_item)
        for low, high in plan:
            submit(low, high)
        client.publish_dataset(run.record(), name=name)
    except BaseException:
        client.cancel(run.futures)
        raise
    return run


def _wait(client: Client, futures: list[Future], timeout: float, first: bool = False) -> None:
    """Block (inside Python, with a deadline) until all or the first of ``futures`` are done.

    ``distributed.wait`` needs a default client, which a bridge's client is not.
    """

    if not futures:
        return

    async def waiting() -> None:
        tasks = [asyncio.ensure_future(f._state.wait()) for f in futures]
        try:
            await asyncio.wait(tasks, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED if first else asyncio.ALL_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()

    client.sync(waiting)


def _probe(client: Client, submit: Callable[[int, int], Future], n: int, threads: int) -> tuple[int, float]:
    """Measure the time per item with probe chunks; return (next item, seconds per item).

    Every thread first gets a probe of two items. The first call on a fresh worker pays for its
    imports (seconds for SymPy or Numba on a busy machine), so only the second call is timed, and
    warming every worker at once costs nothing: they would idle otherwise. The first probe to
    finish gives the estimate; if none finishes within :data:`PROBE_WAIT_COLD` the items are slow.
    While the timed calls ran too briefly to measure, probes ten times larger follow.
    """
    position, sizes, warmups = 0, {}, []
    while len(warmups) < threads and position < n:
        high = min(n, position + 2)
        future = submit(position, high)
        sizes[future.key], position = high - position, high
        warmups.append(future)
    _wait(client, warmups, PROBE_WAIT_COLD, first=True)
    finished = [future for future in warmups if future.done()]
    if not finished:
        return position, PROBE_WAIT_COLD / 2  # slow items: at least this long each
    if finished[0].status != "finished":
        return position, TARGET_CHUNK_SECONDS  # it failed; gather will say why; keep chunks small
    per_item, measured = _timing(finished[0].result(), sizes[finished[0].key])
    size = 20
    for _ in range(MAX_PROBES):
        if measured >= PROBE_SECONDS or position >= n:
            break
        high = min(n, position + size)
        future = submit(position, high)
        _wait(client, [future], PROBE_WAIT)
        if not future.done() or future.status != "finished":
            return high, per_item  # landed on a worker still busy or failing: keep the estimate
        per_item, measured = _timing(future.result(), high - position)
        position = high
        size = min(size * 10, max(1, (n - position) // (CHUNKS_PER_THREAD * threads)))
    return position, per_item


def _timing(chunk_result: tuple, count: int) -> tuple[float, float]:
    """(seconds per item, seconds measured) of a finished chunk, leaving out its first call."""
    _, _, seconds, first = chunk_result
    if count < 2:
        return seconds, seconds
    return (seconds - first) / (count - 1), seconds - first


def collect(client: Client, run: Run, stack: bool = False, timeout: float | None = None,
            progress: bool = True, stream: IO[str] | None = None) -> Any:
    """Wait for every chunk of ``run`` (showing progress) and return the results in input order.

    Raises :class:`ItemError` for the first failing item (by index), :class:`RunError` when a chunk
    failed as a whole, and ``TimeoutError`` after ``timeout`` seconds; the run stays on the
    cluster in every case, so ``results(name)`` can try again.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    meter = Progress(run.name, run.n_items, stream) if progress else None
    pending = list(run.futures)
    while pending:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(
                f"run {run.name!r}: {run.done_items()} of {run.n_items} items done after {timeout:g} s; "
                f"the results stay on the cluster: collect them later with results({run.name!r})")
        _wait(client, pending, 0.5 if left is None else min(0.5, left), first=True)
        pending = [f for f in pending if not f.done()]
        if meter:
            meter.update(run.done_items())
    if meter:
        meter.finish()
    chunks = []
    for (low, high), future in zip(run.bounds, run.futures):
        if future.status != "finished":
            try:
                future.result()
            except FutureCancelledError:
                raise RunError(f"run {run.name!r} was cancelled (items {low}..{high - 1} have no results)") from None
            except Exception as error:
                raise RunError(f"items {low}..{high - 1} of run {run.name!r} failed as a chunk: "
                               f"{type(error).__name__}: {error}") from error
    for (low, high), (values, errors, _, _), worker in zip(run.bounds, client.gather(run.futures),
                                                             _workers_of(client, run)):
        if errors:
            index = min(errors)
            item, error, remote = errors[index]
            raise ItemError(run.name, index, item, worker, error, remote)
        chunks.append(values)
    return _join(chunks, stack)


def _workers_of(client: Client, run: Run) -> list[str]:
    """Where each chunk's result is (for error messages); "a worker" when the scheduler no longer knows."""
    where = client.who_has(run.futures)
    return [next(iter(where.get(f.key, ())), "a worker") for f in run.futures]


def _join(chunks: list[Any], stack: bool) -> Any:
    if not stack:
        return list(itertools.chain.from_iterable(chunks))
    import numpy as np

    if chunks and all(isinstance(c, np.ndarray) for c in chunks):
        return np.concatenate(chunks)
    values = list(itertools.chain.from_iterable(chunks))
    if not values:
        return np.empty(0)
    return np.stack([np.asarray(v) for v in values])


def release(client: Client, name: str) -> None:
    """Let the cluster forget run ``name`` and its results."""
    try:
        record = client.get_dataset(name)
    except KeyError:
        raise KeyError(f"no run named {name!r} on this cluster") from None
    client.unpublish_dataset(name)
    client.cancel(futures_in(record))


def futures_in(record: Any) -> list[Future]:
    return list(record["futures"]) if isinstance(record, dict) and RUN_MARKER in record else []


def reattach(client: Client, name: str) -> Run:
    """The run published as ``name``, with futures bound to ``client``."""
    try:
        return Run.from_record(name, client.get_dataset(name))
    except KeyError:
        raise KeyError(f"no run named {name!r} on this cluster (runs: {client.list_datasets()})") from None
