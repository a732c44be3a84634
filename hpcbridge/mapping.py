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

The workers also save every finished chunk in the run's directory (:mod:`hpcbridge.rundir`),
so results outlive the cluster too: a chunk the cluster lost is read from there, and a later
``map`` of the same name, function and items computes only what no chunk file holds. When items
have no result anywhere, :func:`collect` raises the :mod:`hpcbridge.losses` error of the cause.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import pickle
import secrets
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from distributed import Client, Future
from distributed.client import FutureCancelledError

from hpcbridge import broadcast as broadcasts
from hpcbridge import drain, functions, losses
from hpcbridge.losses import RunError, RunLost
from hpcbridge.missing_modules import module_missing
from hpcbridge.progress import Progress
from hpcbridge.rundir import RunDirectory, RunMismatchError, function_identity, items_digest, missing_ranges, stamp

TARGET_CHUNK_SECONDS = 0.25
SHORTEST_CHUNK_SECONDS = 0.03  # ten times the ~3 ms of CPU one task costs across all processes here
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
RUN_MARKER = "hpcbridge-run"
CLAIM = "starting"  # a published record with this key is a name taken by a run that is being started
WORKERLESS_SECONDS = 20.0  # a run whose cluster has had no worker this long is reported lost
RECONNECT_SECONDS = 10.0  # how long a client tries to reach a scheduler that went away
DIRECT_PROBE_SECONDS = 2.0  # a worker that does not answer the client this fast is reached through the scheduler
UNREACHABLE_SECONDS = 30.0  # a scheduler that answers nothing this long (its node cut off) is reported lost

logger = logging.getLogger("hpcbridge.mapping")

# Worker-side: items executed per run, to show that nothing ran twice.
_EXECUTED: dict[str, int] = {}

__all__ = ["ItemError", "RunError", "RunLost", "RunMismatchError", "Run", "start", "collect", "release"]


class ItemError(Exception):
    """A user function failed on one item; carries the item's index, the item and the remote traceback."""

    def __init__(self, run: str, index: int, item: str, worker: str, error: str, remote_traceback: str) -> None:
        super().__init__(run, index, item, worker, error, remote_traceback)
        self.run, self.index, self.item, self.worker = run, index, item, worker
        self.error, self.remote_traceback = error, remote_traceback

    def __str__(self) -> str:
        return (f"item {self.index} of run {self.run!r} failed on {self.worker}: {self.error}\n"
                f"the item: {self.item}\nremote traceback:\n{self.remote_traceback}")


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
    directory: RunDirectory | None = None
    expected_seconds: float = 0.0


def run_chunk(task: ChunkTask, *extra: Any) -> tuple[Any, dict[int, tuple[str, str, str]], float, float]:
    """Worker side: ``fn(item, *extra)`` for each item; broadcast handles become their objects.

    Returns the values (one array when stacking worked), the errors by item index (the item's
    repr, the error, the formatted traceback), the chunk's seconds and its first call's seconds.
    A chunk already saved in the run directory (computed before its worker died) is read back,
    not computed again; a finished chunk without errors is saved there before it is returned.
    A worker that would not finish the chunk before its job's walltime hands it back
    (:func:`hpcbridge.drain.check`).
    """
    missing = functions.unimportable(task.fn)
    if missing is not None:
        raise missing  # the chunk fails as a whole: the client names the module and this worker
    directory = task.directory
    high = task.start + len(task.items)
    if directory is not None and directory.has_chunk(task.start, high):
        try:
            return directory.load_chunk(task.start, high), {}, 0.0, 0.0
        except (OSError, ValueError, EOFError) as error:
            logger.warning("hpcbridge: computing chunk %s..%s again: its saved copy is unreadable (%s)",
                           task.start, high - 1, error)
    drain.check(task.expected_seconds)
    args = [broadcasts.value(arg.name) if isinstance(arg, broadcasts.Broadcast) else arg for arg in extra]
    values: list[Any] = []
    errors: dict[int, tuple[str, str, str]] = {}
    drain.started()
    started = time.perf_counter()
    first = 0.0
    try:
        first = _call_each(task, args, values, errors, started)
        seconds = time.perf_counter() - started
    finally:
        drain.record(time.perf_counter() - started)
    _EXECUTED[task.run] = _EXECUTED.get(task.run, 0) + len(task.items)
    if task.stack and not errors:
        values = _stack_if_arrays(values)
    if directory is not None and not errors:
        try:
            pickled = directory.save_chunk(task.start, high, values)
        except Exception as error:  # the result still goes back through the cluster
            logger.warning("hpcbridge: chunk %s..%s of run %s not saved in %s: %s", task.start, high - 1,
                           task.run, directory.path, error)
        else:
            if pickled is not None:
                values = Pickled(pickled)  # pickled once, for the disk and for the trip back
    return values, errors, seconds, first


@dataclass(frozen=True)
class Pickled:
    """A chunk's values as the pickle its worker saved; the client loads them (:meth:`values`).

    The pickle travels as a buffer of its own (protocol 5), so distributed sends it as a frame
    without copying it into its message (8 MB blocks: two copies fewer each way).
    """

    data: bytes | memoryview

    def values(self) -> Any:
        return pickle.loads(self.data)

    def __reduce_ex__(self, protocol: int) -> tuple:
        if protocol >= 5:
            return Pickled, (pickle.PickleBuffer(self.data),)
        return Pickled, (bytes(self.data),)


def _call_each(task: ChunkTask, args: list[Any], values: list[Any], errors: dict[int, tuple[str, str, str]],
               started: float) -> float:
    """Append ``fn(item, *args)`` for every item to ``values`` (None and an entry in ``errors`` when it
    raises); return the first call's seconds.

    The items after the first run through ``map`` into ``values.extend`` (C loops, no Python
    bytecode per item: for tiny items this loop is most of a worker's cost). An item that raises
    stops ``extend`` with the values before it kept; its error is noted and the loop goes on from
    the next item, so every item runs exactly once. (A StopIteration from the function would end
    ``map`` quietly: the count of values shows it.)
    """
    fn, items = task.fn, task.items
    calls = functions.per_item_calls(fn, items, args)
    first, count = -1.0, len(items)
    while len(values) < count:
        try:
            if first < 0:
                values.append(next(calls))
                first = time.perf_counter() - started
            values.extend(calls)
            if len(values) < count:  # the function raised StopIteration, which ends map quietly
                raise RuntimeError("the function raised StopIteration")
        except Exception as error:
            index = len(values)
            errors[task.start + index] = (_short_repr(items[index]), f"{type(error).__name__}: {error}",
                                          traceback.format_exc())
            values.append(None)
            if first < 0:
                first = time.perf_counter() - started
    return max(first, 0.0)


def executed_items() -> dict[str, int]:
    """Worker side: how many items this worker process has run, per run name."""
    return dict(_EXECUTED)


def _short_repr(item: Any, limit: int = 300) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _stack_if_arrays(values: list[Any]) -> Any:
    """One array of ``values`` when they are all arrays or numbers (else the list as it is).

    Numbers go into ``np.array`` at once: through ``np.stack`` of one 0-d array each they cost
    30 ms per 40,000 values, 3 % of a prime-sum chunk's time.
    """
    import numpy as np

    if not values:
        return values
    if all(isinstance(v, (np.generic, int, float, complex)) for v in values):
        return np.array(values)
    if all(isinstance(v, (np.ndarray, np.generic, int, float, complex)) for v in values):
        try:
            return np.stack([np.asarray(v) for v in values])
        except ValueError:
            pass
    return values


def plan_chunks(start: int, stop: int, threads: int, seconds_per_item: float,
                target_seconds: float = TARGET_CHUNK_SECONDS) -> list[tuple[int, int]]:
    """Split items ``[start, stop)`` into chunks that shrink towards the end (guided self-scheduling).

    A chunk takes ``remaining / (CHUNKS_PER_THREAD * threads)`` items, but at most
    ``target_seconds`` of work and at least :data:`SHORTEST_CHUNK_SECONDS` of it (and one item):
    a task costs milliseconds, so tiny items go in few large chunks. The shortest chunk is never
    more than a thread's fair share of all the items, so even a small map keeps every thread busy.
    A range of at most :data:`FEW_CHUNKS_SECONDS` of work is split evenly, one chunk per thread:
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
    if per_item * (stop - start) <= FEW_CHUNKS_SECONDS:
        return [(low, min(stop, low + fair_share)) for low in range(start, stop, fair_share)]
    shortest = min(max(1, int(SHORTEST_CHUNK_SECONDS / per_item)), fair_share)
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
    """A map that the cluster is computing or holds: its name, its chunks, and their futures.

    A chunk whose future is ``None`` was saved on disk by an earlier cluster (a resumed run).
    ``len(run)`` is its number of items; ``run.result()`` (or iterating over the run) waits for
    it and gives the results in input order, as ``bridge.gather(run)`` does, through the bridge
    that made the run (``bridge``; None for a run read from a record or from disk).
    """

    name: str
    n_items: int
    bounds: list[tuple[int, int]]
    futures: list[Future | None] = field(repr=False)
    function: str = ""
    directory: str | None = None
    bridge: Any = field(default=None, repr=False, compare=False)
    _values: Any = field(default=None, init=False, repr=False, compare=False)
    # What the run's measured seconds per item are remembered under (see remembered_estimate);
    # set by start, not published: a run read from a record or from disk teaches nothing.
    estimate_key: str | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return self.n_items

    def __bool__(self) -> bool:
        return True  # a run is a handle, also when it has no items

    def __iter__(self) -> Iterator[Any]:
        """The results in input order (waits for the whole run, as :meth:`result`)."""
        return iter(self.result())

    def __repr__(self) -> str:
        return (f"<Run {self.name!r}: {self.function or 'a function'} over {self.n_items} items in "
                f"{len(self.bounds)} chunks, {self.done_items()} done>")

    def result(self, timeout: float | None = None, stack: bool = False) -> Any:
        """Wait for the run and return its results in input order: ``bridge.gather(run)``, kept once collected.

        ``timeout`` (seconds) and ``stack`` are those of :meth:`hpcbridge.Bridge.gather`; errors too
        (:class:`ItemError`, :class:`~hpcbridge.losses.RunLost`, ``TimeoutError``).
        """
        if self._values is None or stack:
            if self.bridge is None:
                raise RuntimeError(f"run {self.name!r} has no bridge to collect it through: use "
                                   f"bridge.gather(run) or bridge.results({self.name!r})")
            values = self.bridge.gather(self, stack=stack, timeout=timeout)
            if stack:
                return values
            self._values = values
        return self._values

    def done_items(self) -> int:
        """How many items are computed (in finished chunks, or saved by an earlier cluster)."""
        return sum(hi - lo for (lo, hi), f in zip(self.bounds, self.futures) if f is None or f.done())

    def record(self) -> dict[str, Any]:
        """What the scheduler keeps under the run's name (the futures keep the results alive)."""
        return {RUN_MARKER: 1, "n_items": self.n_items, "bounds": self.bounds, "futures": self.futures,
                "function": self.function, "directory": self.directory}

    @classmethod
    def from_record(cls, name: str, record: Any) -> Run:
        if not isinstance(record, dict) or RUN_MARKER not in record:
            raise KeyError(f"{name!r} is a published dataset, but not an hpcbridge run")
        if CLAIM in record:
            raise KeyError(f"run {name!r} is being started by a client and has no chunks yet; try again "
                           "once its map has returned")
        return cls(name, record["n_items"], [tuple(b) for b in record["bounds"]], list(record["futures"]),
                   record.get("function", ""), record.get("directory"))

    @classmethod
    def from_disk(cls, directory: RunDirectory) -> Run:
        """A run as its run directory holds it (no cluster): every saved chunk, no futures."""
        manifest = directory.manifest()
        saved = directory.saved()
        n_items = int(manifest.get("n_items", saved[-1][1] if saved else 0))
        planned = [(int(low), int(high)) for low, high in manifest.get("bounds") or ()]
        bounds = planned if planned and set(saved) <= set(planned) else saved
        return cls(directory.name, n_items, bounds, [None] * len(bounds), str(manifest.get("function", "")),
                   directory.path)


_REACHES: weakref.WeakKeyDictionary[Client, bool] = weakref.WeakKeyDictionary()  # per client: gathers directly?
# Per client: seconds per item that collected runs measured, by function and item type.
_ESTIMATES: weakref.WeakKeyDictionary[Client, dict[str, float]] = weakref.WeakKeyDictionary()


def new_run_name() -> str:
    """A run name that is unique and sorts by time: ``run-20260101-120000-1a2b3c``."""
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def start(client: Client, fn: Callable[..., Any], items: Sequence[Any], extra: Sequence[Any] = (),
          name: str | None = None, stack: bool = False, chunk_size: int | None = None,
          root: str | None = None) -> Run:
    """Submit ``fn(item, *extra)`` for every item as chunks, and publish the run under ``name``.

    With a run directory root (``root``), finished chunks are saved under ``root/name``; when that
    folder already holds a run of the same function and items, only the items it lacks are
    submitted (the run resumes); a different function or items raise :class:`RunMismatchError`.
    """
    name = name or new_run_name()
    start_id = _claim(client, name)
    try:
        return _start_claimed(client, fn, items, extra, name, start_id, stack, chunk_size, root)
    except BaseException:
        _unclaim(client, name, start_id)
        raise


def _start_claimed(client: Client, fn: Callable[..., Any], items: Sequence[Any], extra: Sequence[Any], name: str,
                   start_id: str, stack: bool, chunk_size: int | None, root: str | None) -> Run:
    """:func:`start` once ``name`` is claimed: check the run directory, plan, submit, publish."""
    if not (hasattr(items, "__len__") and hasattr(items, "__getitem__")):
        items = list(items)
    n = len(items)
    threads = max(1, sum(client.nthreads().values()))
    extra = tuple(extra)
    directory = RunDirectory.under(root, name) if root else None
    run = Run(name, n, [], [], getattr(fn, "__qualname__", repr(fn)), directory.path if directory else None)
    manifest: dict[str, Any] = {}
    saved: list[tuple[int, int]] = []
    identity = function_identity(fn)
    if directory is not None:
        digest = items_digest(items, [a for a in extra if not isinstance(a, broadcasts.Broadcast)])
        manifest = directory.manifest()
        if manifest:
            _check_same_run(name, directory, manifest, identity, digest, n)
            saved = [bounds for bounds in directory.saved() if bounds[1] <= n]
        else:
            manifest = {"name": name, "function": identity, "items_digest": digest, "n_items": n,
                        "stack": stack, "created": stamp(), "bounds": None, "seconds_per_item": None}
            directory.create(manifest)
    resumed = bool(manifest.get("created")) and bool(saved or manifest.get("bounds"))
    per_item = float(manifest.get("seconds_per_item") or 0.0)
    run.estimate_key = estimate_key(identity, items)
    remembered = remembered_estimate(client, run.estimate_key)

    def submit(low: int, high: int) -> Future:
        task = ChunkTask(name, fn, items[low:high], low, stack, directory, per_item * (high - low))
        future = client.submit(run_chunk, task, *extra, key=f"{name}-{start_id}-{len(run.futures)}", pure=False)
        run.bounds.append((low, high))
        run.futures.append(future)
        return future

    try:
        if resumed:
            for bounds in saved:
                run.bounds.append(bounds)
                run.futures.append(None)
            for low, high in missing_ranges(n, saved):
                for chunk in _plan(low, high, chunk_size, threads, per_item or TARGET_CHUNK_SECONDS / 100):
                    submit(*chunk)
        else:
            position = 0
            if not chunk_size:  # measured by an earlier run of this function (no warm-up), or probed now
                position, per_item = (0, remembered) if remembered else _probe(client, submit, n, threads)
            for low, high in _plan(position, n, chunk_size, threads, per_item):
                submit(low, high)
        order = sorted(range(len(run.bounds)), key=lambda i: run.bounds[i])
        run.bounds[:] = [run.bounds[i] for i in order]
        run.futures[:] = [run.futures[i] for i in order]
        if directory is not None:
            directory.write_manifest({**manifest, "bounds": run.bounds,
                                      "seconds_per_item": per_item or manifest.get("seconds_per_item")})
        client.publish_dataset(run.record(), name=name, override=True)  # replaces this start's claim
    except BaseException:
        client.cancel([f for f in run.futures if f is not None])
        raise
    return run


def _claim(client: Client, name: str) -> str:
    """Take ``name`` on the cluster for one start of a run, before anything is submitted; returns the
    start's id, which every task key of the run carries.

    Publishing without ``override`` is atomic on the scheduler: of two clients that start runs of
    one name at once, exactly one gets it, and the other is refused before it submits a task or
    touches the run directory. The id keeps two starts' task keys apart even so.
    """
    start_id = secrets.token_hex(4)
    try:
        client.publish_dataset({RUN_MARKER: 1, CLAIM: start_id}, name=name)
    except KeyError:
        raise KeyError(f"a run or dataset named {name!r} already exists on this cluster (another client may "
                       "be starting it); collect or release it first, or choose another name") from None
    return start_id


def _unclaim(client: Client, name: str, start_id: str) -> None:
    """Give ``name`` back after a start that failed, unless it no longer holds this start's claim."""
    try:
        record = client.get_dataset(name)
        if isinstance(record, dict) and record.get(CLAIM) == start_id:
            client.unpublish_dataset(name)
    except Exception:  # the scheduler is gone or the name was released: nothing to give back
        pass


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


def _remember_estimate(client: Client, run: Run, gathered: list[tuple], finished: list[int]) -> None:
    """Keep the seconds per item measured by the computed chunks of ``run`` (see :func:`remembered_estimate`)."""
    if run.estimate_key is None:
        return
    seconds, count = 0.0, 0
    for i, (_, errors, chunk_seconds, first) in zip(finished, gathered):
        low, high = run.bounds[i]
        if chunk_seconds > 0 and not errors and high - low >= 2:  # 0 s: read back from disk, not computed
            # Each chunk's first call is left out, as the probe does: on a fresh worker it pays
            # for imports (seconds), which would make every later chunk one item long.
            seconds, count = seconds + chunk_seconds - first, count + (high - low - 1)
    if count >= REMEMBERED_MIN_ITEMS:
        _ESTIMATES.setdefault(client, {})[run.estimate_key] = max(seconds, 0.0) / count


def _plan(low: int, high: int, chunk_size: int | None, threads: int, per_item: float) -> list[tuple[int, int]]:
    if chunk_size:
        return [(lo, min(high, lo + chunk_size)) for lo in range(low, high, chunk_size)]
    return plan_chunks(low, high, threads, per_item)


def _check_same_run(name: str, directory: RunDirectory, manifest: dict[str, Any], identity: str, digest: str,
                    n: int) -> None:
    """Refuse to resume a run on disk that mapped another function or other items."""
    if manifest.get("function") != identity:
        raise RunMismatchError(
            f"name: {name!r} is a run in {directory.path} of function {manifest.get('function')}, not of "
            f"{identity}; choose another name, or delete that folder to start the run afresh")
    if manifest.get("n_items") != n or manifest.get("items_digest") != digest:
        raise RunMismatchError(
            f"name: {name!r} is a run in {directory.path} over other items ({manifest.get('n_items')} items, "
            f"digest {manifest.get('items_digest')}; these are {n} items, digest {digest}); choose another "
            "name, or delete that folder to start the run afresh")


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
    When that estimate says the rest of the map is at most :data:`FEW_CHUNKS_SECONDS` of work, the
    rest is planned from it at once: the map is only a few chunks, and waiting for probes would
    cost more than an imprecise estimate can. Otherwise, while the timed calls ran too briefly to
    measure, a probe sized from the estimate to run :data:`PROBE_SECONDS` follows.
    """
    position, sizes, warmups = 0, {}, []
    while len(warmups) < threads and position < n:
        high = min(n, position + 2)
        future = submit(position, high)
        sizes[future.key], position = high - position, high
        warmups.append(future)
    if position >= n:
        return position, 0.0  # the warm-ups hold every item: nothing left to plan
    _wait(client, warmups, PROBE_WAIT_COLD, first=True)
    finished = [future for future in warmups if future.done()]
    if not finished:
        return position, PROBE_WAIT_COLD / 2  # slow items: at least this long each
    if finished[0].status != "finished":
        return position, TARGET_CHUNK_SECONDS  # it failed; gather will say why; keep chunks small
    per_item, measured = _timing(_gather(client, finished[0]), sizes[finished[0].key])
    for _ in range(MAX_PROBES):
        if measured >= PROBE_SECONDS or position >= n or per_item * (n - position) <= FEW_CHUNKS_SECONDS:
            break
        high = min(n, position + _probe_size(per_item, n - position, threads))
        future = submit(position, high)
        _wait(client, [future], PROBE_WAIT)
        if not future.done() or future.status != "finished":
            return high, per_item  # landed on a worker still busy or failing: keep the estimate
        per_item, measured = _timing(_gather(client, future), high - position)
        position = high
    return position, per_item


def _gather(client: Client, futures: Future | list[Future]) -> Any:
    """Finished futures' results, straight from their workers when the client reaches them."""
    return client.gather(futures, direct=reaches_workers(client))


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
    _, _, seconds, first = chunk_result
    if count < 2:
        return seconds, seconds
    return (seconds - first) / (count - 1), seconds - first


def collect(client: Client, run: Run, stack: bool = False, timeout: float | None = None,
            progress: bool = True, stream: IO[str] | None = None, job: Any = None,
            drain_from: float | None = None) -> Any:
    """Wait for every chunk of ``run`` (showing progress) and return the results in input order.

    Chunks come from the cluster, or from the run directory when the cluster lost them or an
    earlier cluster saved them. Raises :class:`ItemError` for the first failing item (by index),
    :class:`RunError` when a chunk failed as a whole, a :class:`~hpcbridge.losses.RunLost` (one
    type per cause, said in the words of ``job``'s batch system) when items have no result
    anywhere, and ``TimeoutError`` after ``timeout`` seconds; the run stays on the cluster in
    every case, so ``results(name)`` can try again. ``drain_from`` (epoch seconds: when the
    job's workers may start leaving for its walltime) lets a loss after it be named as the
    walltime, also when the batch system calls the job COMPLETED because its workers left in time.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    meter = Progress(run.name, run.n_items, stream) if progress else None
    watch = ClusterWatch(client, drain_from)
    pending = [f for f in run.futures if f is not None]
    while pending:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise TimeoutError(
                f"run {run.name!r}: {run.done_items()} of {run.n_items} items done after {timeout:g} s; "
                f"the results stay on the cluster: collect them later with results({run.name!r})")
        if client.status not in ("closing", "closed"):  # a closed client (it gave up) has no loop to wait in
            _wait(client, pending, 0.5 if left is None else min(0.5, left), first=True)
        if meter:
            meter.update(run.done_items())
        lost = watch.lost(cancelled=any(f.status == "cancelled" for f in run.futures if f is not None))
        if not lost:
            _refresh_after_reconnect(client, run)
        pending = [f for f in run.futures if f is not None and not f.done()]
        if lost:
            break
    if meter and not pending:
        meter.finish()
    return _assemble(client, run, stack, watch, job)


def _refresh_after_reconnect(client: Client, run: Run) -> bool:
    """Take the run's futures anew from the scheduler after the client reconnected to it; True if taken.

    A client whose connection broke (the scheduler's node cut off for half a minute) cancels every
    future it holds when it reconnects ("scheduler-connection-lost"), but the scheduler still holds
    the run under its name, and keeps computing it: the published record has live futures.
    """
    if client.status != "running" or not any(_cancelled_by_reconnect(f) for f in run.futures if f is not None):
        return False
    fresh = _fresh_futures(client, run)
    if fresh is None:
        return False
    run.futures = fresh
    return True


def rebind(client: Client, run: Run) -> None:
    """Give ``run`` futures of ``client`` (a new client attached to the same scheduler), by its name.

    Futures of a client that was closed wait for nothing; the scheduler holds the run under its
    name. A run the scheduler does not hold (or holds with other chunks) keeps no futures: it is
    then collected from its run directory.
    """
    run.futures = _fresh_futures(client, run) or [None] * len(run.bounds)


def _fresh_futures(client: Client, run: Run) -> list[Future | None] | None:
    """The run's futures as the scheduler's record under its name holds them, bound to ``client``;
    None when it holds no such run (released meanwhile, other chunks) or went away again (a
    closed comm or a timeout: OSError)."""
    try:
        fresh = reattach(client, run.name)
    except (KeyError, OSError):
        return None
    return fresh.futures if fresh.bounds == run.bounds else None


def _cancelled_by_reconnect(future: Future) -> bool:
    error = getattr(future._state, "exception", None) if future.status == "cancelled" else None
    return getattr(error, "reason", None) == "scheduler-connection-lost"


class ClusterWatch:
    """Notices, with bounded waits, that the scheduler went away or that the cluster has no workers."""

    def __init__(self, client: Client, drain_from: float | None = None) -> None:
        self.client = client
        self.drain_from = drain_from
        self.next_look = time.monotonic() + 2.0
        self.workers = -1
        self.workerless_since: float | None = None
        self.unanswered_since: float | None = None
        self.connection_lost = False
        self.tried_seconds = 0.0
        self.drained: list[dict[str, Any]] = []
        self.address = getattr(client.scheduler, "address", "?")
        self.answered_at = time.monotonic()  # the scheduler's last answer (or the start of the watch)

    def lost(self, cancelled: bool = False) -> bool:
        """True once the run cannot go on: the scheduler is gone, or no worker joined for a while."""
        if cancelled or self.client.status != "running":
            return self._wait_for_reconnect()
        if time.monotonic() < self.next_look:
            return False
        self.next_look = time.monotonic() + 2.0
        workers = _ask(self.client, "ncores", timeout=5.0)
        if workers is None:
            if self.client.status != "running":
                return self._wait_for_reconnect()
            self.unanswered_since = self.unanswered_since or time.monotonic()
            silent = time.monotonic() - self.unanswered_since
            if silent < UNREACHABLE_SECONDS:
                return False
            self.connection_lost, self.tried_seconds = True, silent  # e.g. its node is cut off
            try:
                self.client.close(timeout=2)
            except Exception:
                pass
            return True
        self.unanswered_since = None
        self.answered_at = time.monotonic()
        if len(workers) < self.workers or not workers:
            self._read_drain_events()
        self.workers = len(workers)
        if workers:
            self.workerless_since = None
            return False
        self.workerless_since = self.workerless_since or time.monotonic()
        return time.monotonic() - self.workerless_since >= WORKERLESS_SECONDS

    @property
    def workers_gone(self) -> bool:
        return self.workers == 0

    def _wait_for_reconnect(self) -> bool:
        """Let the client try to reach the scheduler again (bounded); True when it could not."""
        if self.client.status == "running":
            return False  # futures were cancelled on a live cluster: a client released the run
        started = time.monotonic()
        while self.client.status == "connecting" and time.monotonic() - started < RECONNECT_SECONDS + 2:
            time.sleep(0.2)
        self.tried_seconds = time.monotonic() - started + 0.5
        self.connection_lost = self.client.status != "running"
        if self.connection_lost and self.client.status not in ("closed", "closing"):
            try:
                self.client.close(timeout=2)
            except Exception:
                pass
        return self.connection_lost

    def _read_drain_events(self) -> None:
        events = _ask(self.client, "events", timeout=5.0, topic=drain.EVENT_TOPIC)
        if events:
            self.drained = [message for _, message in events]

    def explain(self, job: Any) -> tuple[type[RunLost], str]:
        """The cause of the loss (:func:`hpcbridge.losses.explain`). A scheduler whose address times out
        (its node is cut off) is said to be silent since its last answer, and its job is not waited for."""
        near_end = self.drain_from is not None and time.time() >= self.drain_from
        silent = self.connection_lost and losses.address_silent(self.address)
        tried = max(self.tried_seconds, time.monotonic() - self.answered_at) if silent else self.tried_seconds
        return losses.explain(job, self.connection_lost, self.workers_gone, self.drained, tried,
                              self.address, near_end=near_end, silent=silent)


def _ask(client: Client, method: str, timeout: float, **kwargs: Any) -> Any:
    """One call to the scheduler that gives up after ``timeout`` s (None then, or when it fails)."""
    if client.status != "running":
        return None

    async def asking() -> Any:
        return await asyncio.wait_for(getattr(client.scheduler, method)(**kwargs), timeout)

    try:
        return client.sync(asking)
    except Exception:
        return None


def _assemble(client: Client, run: Run, stack: bool, watch: ClusterWatch, job: Any) -> Any:
    """The run's values in input order, from the cluster where it has them, else from the run directory."""
    directory = RunDirectory(run.directory) if run.directory else None
    if client.status != "running":
        watch.connection_lost = True
    chunks: list[Any] = [None] * len(run.bounds)
    have = [False] * len(run.bounds)
    finished = [i for i, f in enumerate(run.futures) if f is not None and f.status == "finished"]
    gathered: list[Any] = []
    if finished and client.status == "running":
        try:
            gathered = _gather(client, [run.futures[i] for i in finished])
        except Exception:  # the cluster went away while sending: take what the disk has
            gathered = []
            watch.lost(cancelled=True)
    _remember_estimate(client, run, gathered, finished)
    failed_items: list[tuple[int, int]] = []
    for i, (values, errors, _, _) in zip(finished, gathered):
        if errors:
            failed_items.append((min(errors), i))
            chunks[i] = errors
        else:
            chunks[i], have[i] = (values.values() if isinstance(values, Pickled) else values), True
    if failed_items:
        index, i = min(failed_items)
        item, error, remote = chunks[i][index]
        raise ItemError(run.name, index, item, _worker_of(client, run.futures[i]), error, remote)
    _read_saved(directory, run.bounds, chunks, have)
    cause = None
    if not all(have) and (watch.connection_lost or watch.workers_gone):
        # Asking the batch system can take seconds, while workers that lost the scheduler still
        # save what they finish: read the disk again after it, so the error counts those too.
        cause = watch.explain(job)
        _read_saved(directory, run.bounds, chunks, have)
    for i, ((low, high), future) in enumerate(zip(run.bounds, run.futures)):
        if not have[i] and future is not None and future.status == "error" and not watch.connection_lost:
            try:
                future.result()
            except Exception as error:
                missing = module_missing(error, f"items {low}..{high - 1} of run {run.name!r}",
                                         getattr(client.scheduler, "address", "?"), _erred_on(client, future))
                if missing is not None:
                    raise missing from error
                raise RunError(f"items {low}..{high - 1} of run {run.name!r} failed as a chunk: "
                               f"{type(error).__name__}: {error}") from error
    missing = [bounds for bounds, ok in zip(run.bounds, have) if not ok]
    covered = sum(high - low for low, high in run.bounds)
    if covered < run.n_items:  # a run read from disk: chunks that no worker saved
        missing = sorted(missing + missing_ranges(run.n_items, run.bounds))
    if not missing:
        return _join(chunks, stack)
    if cause is not None:
        cls, what = cause
    elif client.status == "running" and any(f is not None and f.status == "cancelled" for f in run.futures):
        cls, what = RunLost, "its tasks were cancelled on the cluster (a client released the run)"
    else:
        cls, what = RunLost, "the cluster does not hold this run, and its run directory lacks these items"
    results: list[Any] = [None] * run.n_items
    for (low, high), values, ok in zip(run.bounds, chunks, have):
        if ok:
            results[low:high] = list(values)
    done = run.n_items - sum(high - low for low, high in missing)
    saved = min(run.n_items, directory.saved_items()) if directory is not None else 0
    raise cls(run.name, what, run.n_items, done, saved, missing, results,
              directory.path if directory else None, getattr(job, "job_id", None))


def reaches_workers(client: Client) -> bool:
    """Whether this client can open connections to the workers themselves (asked once per client).

    distributed gathers results through the scheduler unless told otherwise: every byte then
    crosses two connections, which halves the throughput (8 MB blocks on TLS here: 0.47 against
    1.03 GB/s direct). A client that reaches a worker within :data:`DIRECT_PROBE_SECONDS` gathers
    directly (distributed still takes what a worker does not send through the scheduler); one
    behind a tunnel to the scheduler's port only keeps the scheduler's route.
    """
    known = _REACHES.get(client)
    if known is not None:
        return known

    async def probe(worker: str) -> bool:
        await asyncio.wait_for(client.rpc(worker).identity(), DIRECT_PROBE_SECONDS)
        return True

    try:
        workers = list(client.scheduler_info(n_workers=-1).get("workers", ()))
    except Exception:  # the scheduler is away: through it (distributed's default), asked again next time
        return False
    if not workers:
        return False
    try:
        reached = client.sync(probe, workers[0])
    except Exception:  # refused, timed out, TLS refused: any failure means "not directly"
        reached = False
    _REACHES[client] = reached
    return reached


def _read_saved(directory: RunDirectory | None, bounds: list[tuple[int, int]], chunks: list[Any],
                have: list[bool]) -> None:
    """Fill in, from the run directory, the chunks not had yet that a worker saved there."""
    for i, (low, high) in enumerate(bounds):
        if have[i] or directory is None or not directory.has_chunk(low, high):
            continue
        try:
            chunks[i], have[i] = directory.load_chunk(low, high), True
        except (OSError, ValueError, EOFError):
            pass


def _erred_on(client: Client, future: Future) -> str | None:
    """The worker where ``future``'s task failed, if the scheduler says (None when the scheduler refused it)."""
    try:
        return next(iter(client.run_on_scheduler(_erred_workers, future.key)), None)
    except Exception:
        return None


def _erred_workers(key: str, dask_scheduler: Any = None) -> list[str]:
    task = dask_scheduler.tasks.get(key)
    return [getattr(worker, "address", worker) for worker in getattr(task, "erred_on", None) or ()]


def _worker_of(client: Client, future: Future | None) -> str:
    """Where a chunk's result is (for error messages); "a worker" when the scheduler no longer knows."""
    if future is None:
        return "a worker"
    where = client.who_has([future])
    return next(iter(where.get(future.key, ())), "a worker")


def _join(chunks: list[Any], stack: bool) -> Any:
    if not stack:
        if chunks and all(type(chunk) is list for chunk in chunks):
            joined = chunks[0]  # each chunk's list is this gather's own: the first grows into the result
            for chunk in chunks[1:]:
                joined.extend(chunk)
            return joined
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
    if not isinstance(record, dict) or RUN_MARKER not in record:
        return []
    return [future for future in record.get("futures", ()) if future is not None]


def reattach(client: Client, name: str) -> Run:
    """The run published as ``name``, with futures bound to ``client``."""
    try:
        return Run.from_record(name, client.get_dataset(name))
    except KeyError:
        raise KeyError(f"no run named {name!r} on this cluster (runs: {client.list_datasets()})") from None
