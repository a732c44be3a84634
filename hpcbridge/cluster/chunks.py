"""What a worker runs for one chunk of a map: every item's call, its errors, the chunk's saved copy.

A chunk task (:class:`ChunkTask`) carries the function and a slice of the items. On a worker,
:func:`run_chunk` calls the function on each item, notes a failing item's error instead of
failing the task (so every other item of the chunk keeps its result), saves the finished chunk
in the run's directory (:mod:`hpcbridge.rundir`) and hands the values back, pickled once for
both (:class:`Pickled`). The client side of a map is :mod:`hpcbridge.client.runs`.
"""

from __future__ import annotations

import logging
import pickle
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hpcbridge import functions
from hpcbridge.cluster import broadcasts, drain
from hpcbridge.rundir import RunDirectory, failure_text

logger = logging.getLogger("hpcbridge.client.runs")

# Worker-side: items executed per run, to show that nothing ran twice. Only the latest runs are
# kept, so that a worker serving many maps does not grow by one entry per run.
EXECUTED_RUNS_KEPT = 1000
_EXECUTED: dict[str, int] = {}
# The scheduler's event topic under which a worker says that it could not save a chunk (passed on to
# the client that started the run, or asked at gather: hpcbridge.client.runs and .saving).
NOT_SAVED_TOPIC = "hpcbridge-not-saved"


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
    (:func:`hpcbridge.cluster.drain.check`).
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
    _count_executed(task.run, len(task.items))
    if task.stack and not errors:
        values = _stack_if_arrays(values)
    if directory is not None and not errors:
        try:
            pickled = directory.save_chunk(task.start, high, values)
        except Exception as error:  # the result still goes back through the cluster
            logger.warning("hpcbridge: chunk %s..%s of run %s not saved in %s: %s", task.start, high - 1,
                           task.run, directory.path, error)
            _tell_not_saved(task, directory, error)
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


def _count_executed(run: str, count: int) -> None:
    _EXECUTED[run] = _EXECUTED.pop(run, 0) + count  # (re)inserted last: the dict's order is by latest use
    while len(_EXECUTED) > EXECUTED_RUNS_KEPT:
        del _EXECUTED[next(iter(_EXECUTED))]


def executed_items() -> dict[str, int]:
    """Worker side: how many items this worker process has run, per run name (its latest runs)."""
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


def _tell_not_saved(task: ChunkTask, directory: RunDirectory, error: Exception) -> None:
    """Worker side: tell the scheduler (an event under :data:`NOT_SAVED_TOPIC`) why a chunk was not saved."""
    try:
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(NOT_SAVED_TOPIC, {"run": task.run, "directory": directory.path, "low": task.start,
                                           "high": task.start + len(task.items), "worker": worker.address,
                                           "error": failure_text(error)})
    except Exception:  # noqa: BLE001 -- not on a worker, or the scheduler is away: the log line stays
        logger.debug("hpcbridge: could not report the unsaved chunk", exc_info=True)
