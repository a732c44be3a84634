"""What a worker runs for one chunk of a map: every item's call, its errors, the chunk's saved copy.

A chunk task (:class:`ChunkTask`) carries the function and a slice of the items. On a worker,
:func:`run_chunk` calls the function on each item, notes a failing item's error instead of
failing the task (so every other item of the chunk keeps its result), saves the finished chunk
in the run's directory (:mod:`hpcbridge.rundir`) and hands the values back, pickled once for
both (:class:`Pickled`). The client side of a map is :mod:`hpcbridge.client.runs`.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hpcbridge import functions
from hpcbridge.cluster import attempts, broadcasts, drain, spread
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
    item_timeout: float | None = None  # seconds an item may run before its worker process is ended to stop it
    threads: int = 1  # how many threads of its worker the chunk's items may use (hpcbridge.cluster.spread)
    # Items known to fail without running (by item index: the item's repr, the error, the details, where it
    # died): a rest handed on from a chunk whose retry had found them (an item past its timeout, one that
    # ended its worker), so that the new tasks do not run them again.
    skip: dict[int, tuple] | None = None


def run_chunk(task: ChunkTask, *extra: Any) -> tuple[Any, dict[int, tuple], float, float, dict[str, Any] | None]:
    """Worker side: ``fn(item, *extra)`` for each item; broadcast handles become their objects.

    Returns the values (one array when stacking worked), the errors by item index (the item's
    repr, the error, the formatted traceback, and for an item that ended its worker process the
    worker it ran on), the chunk's seconds, its first call's seconds, and, for a chunk that returns
    fewer values than it has items (a client cut it), the rest it did not compute
    (:func:`hpcbridge.cluster.attempts.rest_of`): any client that finds the rest in no other task
    submits it from there.
    A retry of a chunk already saved in the run directory (computed before its worker died, the
    task's annotations say: :mod:`hpcbridge.cluster.attempts`) reads it back instead of computing it
    again; a finished chunk without errors is saved there before it is returned.
    A worker that would not finish the chunk before its job's walltime hands it back
    (:func:`hpcbridge.cluster.drain.check`). A retry after its worker died learns from the dead
    worker's nanny which item was running (:mod:`hpcbridge.cluster.attempts`) and fails that item
    instead of running it again; a chunk that a client cut (the rest of its items went to other
    tasks) returns only the items before the cut.
    """
    missing = functions.unimportable(task.fn)
    if missing is not None:
        raise missing  # the chunk fails as a whole: the client names the module and this worker
    directory = task.directory
    key = attempts.current_key() or f"{task.run}-{task.start}"
    deaths = attempts.previous_deaths()
    verdict = None
    if deaths:
        kept = (lambda: directory.kept("kept", task.start, task.start + len(task.items), key)) if directory else None
        verdict = attempts.investigate(key, task.start, deaths, kept=kept)
    stop = len(task.items) if verdict is None or verdict.stop is None else verdict.stop
    high = task.start + stop
    if directory is not None and (deaths or attempts.result_was_lost()):
        # This task ran before on a worker that died: what it saved (or kept) there is read back. A
        # first run does not look (that would read every log of the run for every chunk). What it saved
        # may end short of its items: a client cut it, and the rest went to other tasks (or goes with
        # this result, should that client never have heard of the cut).
        try:
            end, values = directory.load_from(task.start, high)
            return values, {}, 0.0, 0.0, attempts.rest_of(task, extra, end - task.start)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
            logger.warning("hpcbridge: computing chunk %s..%s again: its saved copy is unreadable (%s)",
                           task.start, high - 1, error)
        if (failed := directory.kept("failed", task.start, high, key)) is not None:
            # computed before, with failing items, by a worker that then died
            return failed[0], failed[1], 0.0, 0.0, attempts.rest_of(task, extra, stop)
    drain.check(task.expected_seconds / max(1, task.threads))
    args = [broadcasts.value(arg.name) if isinstance(arg, broadcasts.Broadcast) else arg for arg in extra]
    if task.threads > 1 and not deaths and not task.skip:  # a retry runs on one thread, exact: it pins a death
        drain.started()
        started = time.perf_counter()
        try:
            values, errors, seconds, first, called = spread.compute(task, key, args, extra)
        finally:
            drain.record(time.perf_counter() - started)
        return _finish(task, key, extra, values, errors, seconds, first, called)
    per_item = task.expected_seconds / len(task.items) if len(task.items) else 0.0
    attempt = attempts.begin(attempts.Attempt(key, task.run, task.start, task.items, extra, task.item_timeout,
                                              per_item, task, exact=bool(deaths), directory=directory))
    try:
        values, errors = attempt.values, attempt.errors
        skip: dict[int, tuple] = {}
        if verdict is not None:
            if verdict.kept is not None:  # computed before its process was ended on purpose
                kept, kept_errors = verdict.kept
                values.extend(kept[:stop])
                errors.update({i: e for i, e in kept_errors.items() if i < high})
            skip = {i: (_short_repr(task.items[i]), error, details, verdict.where.get(i, "a worker"))
                    for i, (error, details) in verdict.skip.items() if len(values) <= i < stop}
        skip = {**{i - task.start: entry for i, entry in (task.skip or {}).items()
                   if task.start + len(values) <= i < task.start + stop}, **skip}
        attempt.skip = {task.start + i: entry for i, entry in skip.items()}  # a cut's rest carries them on
        keep_at = verdict.suspect if verdict is not None and verdict.suspect is not None else -1
        suspects = verdict is not None and any(len(values) <= i < stop for i in verdict.suspects)
        if verdict is not None:  # kept again, with what this attempt computes, should its process end too
            attempt.known = {i: k for i, k in verdict.known.items() if len(values) <= i < stop}
        with attempts.apart(attempt) if suspects else contextlib.nullcontext():
            drain.started()
            started = time.perf_counter()
            first, called = 0.0, 0
            try:
                first, called = _call_each(task, args, attempt, skip, stop, started, keep_at)
                seconds = time.perf_counter() - started
            finally:
                attempt.finish_loop()
                drain.record(time.perf_counter() - started)
        return _finish(task, key, extra, values, errors, seconds, first, called, attempt.skip)
    finally:
        attempts.end(attempt)
        attempts.leave_pool_if_seceded(attempt)


def _finish(task: ChunkTask, key: str, extra: tuple[Any, ...], values: list[Any], errors: dict[int, tuple],
            seconds: float, first: float, called: int, skip: dict[int, tuple] | None = None
            ) -> tuple[Any, dict[int, tuple], float, float, dict[str, Any] | None]:
    """A computed chunk's result: counted, stacked, kept (with failing items) or saved, and its rest if it was
    cut (with the items in ``skip`` it holds).

    Its seconds are those of all its items at the rate of the ones it called: a retry that took most of
    them from what a dead process kept called few, and the client's planner divides the seconds by all
    (a retry's 20 items over 375 made a 2 ms item look like 0.1 ms, and the next map of that function
    was planned as if its items were too short to spread over threads)."""
    directory = task.directory
    _count_executed(task.run, called)
    if 0 < called < len(values):
        seconds = seconds * len(values) / called
    rest = attempts.rest_of(task, extra, len(values), skip)
    if task.stack and not errors:
        values = _stack_if_arrays(values)
    if directory is not None and errors:
        try:
            directory.keep("failed", task.start, task.start + len(values), key, (values, dict(errors)))
        except Exception as error:  # noqa: BLE001 -- only a worker's death would need it
            logger.warning("hpcbridge: chunk %s..%s of run %s (with failing items) not kept in %s: %s",
                           task.start, task.start + len(values) - 1, task.run, directory.path, error)
    if directory is not None and not errors:
        try:
            pickled = directory.save_chunk(task.start, task.start + len(values), values)
        except Exception as error:  # the result still goes back through the cluster
            logger.warning("hpcbridge: chunk %s..%s of run %s not saved in %s: %s", task.start,
                           task.start + len(values) - 1, task.run, directory.path, error)
            _tell_not_saved(task, directory, error)
        else:
            if pickled is not None:
                values = Pickled(pickled)  # pickled once, for the disk and for the trip back
    return values, dict(errors), seconds, first, rest


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


def _call_each(task: ChunkTask, args: list[Any], attempt: attempts.Attempt, skip: dict[int, tuple], stop: int,
               started: float, keep_at: int = -1) -> tuple[float, int]:
    """Append ``fn(item, *args)`` for the items up to ``stop`` (chunk-relative) to ``attempt.values`` (None
    and an entry in ``attempt.errors`` when it raises); return the first call's seconds and how many
    items were called.

    The items after the first run through ``map`` into ``values.extend`` (C loops, no Python
    bytecode per item: for tiny items this loop is most of a worker's cost), taken from the
    attempt's tracked iterator, which notes each item in the attempt's slot before it runs. An
    item that raises (``SystemExit`` included: ``sys.exit()`` in an item is its error, not the
    worker's end) stops ``extend`` with the values before it kept; its error is noted and the loop
    goes on from the next item, so every item runs exactly once. (A StopIteration from the function
    would end ``map`` quietly: the slot shows an item taken without a value.) Items in ``skip``
    (they ended a worker process before) get their error without running; a cut (the rest of the
    chunk was handed to other tasks) ends the loop early. At ``keep_at`` (a retry reaching the
    block where a worker was killed outright) the items computed so far are kept beside the slot
    first, so that another such death does not make them run a third time. The runs of items in
    ``attempt.known`` (by first item: their values and errors), computed by the threads of the spread
    chunk this retries before its process ended, are taken as they are.
    """
    fn, items, values, errors, known = task.fn, task.items, attempt.values, attempt.errors, attempt.known
    first, called = -1.0, 0
    while len(values) < stop:
        position = len(values)
        if attempt.cut_at is not None and position >= attempt.cut_at:
            break
        if position in skip:
            errors[task.start + position] = skip[position]
            values.append(None)
            continue
        if position in known:  # computed before the process died, by a thread of the spread chunk this retries
            known_values, known_errors = known.pop(position)
            known_values = known_values[:stop - position]
            values.extend(known_values)
            errors.update({i: e for i, e in known_errors.items() if i < task.start + position + len(known_values)})
            continue
        if position == keep_at:
            attempt.keep_computed()
        end = min([i for i in [*skip, *known] if i > position] + ([keep_at] if keep_at > position else []) + [stop])
        attempt.advance(position)
        calls = functions.per_item_calls(fn, attempt.tracked(position, end), args)
        while len(values) < end:
            try:
                if first < 0:
                    values.append(next(calls))
                    first = time.perf_counter() - started
                values.extend(calls)
            except StopIteration:
                pass  # no item left (a cut), or the function raised StopIteration: told apart below
            except BaseException as error:  # noqa: BLE001 -- SystemExit and KeyboardInterrupt too: the item's
                index = len(values)
                errors[task.start + index] = attempts.item_error(items[index], error)
                values.append(None)
                if first < 0:
                    first = time.perf_counter() - started
                continue
            if len(values) < end and attempt.fetched() > len(values):  # taken, but no value came back
                index = len(values)
                errors[task.start + index] = attempts.item_error(items[index], None)
                values.append(None)
                continue
            break
        called += len(values) - position
        if len(values) < end:  # cut
            break
    return max(first, 0.0), called


def _count_executed(run: str, count: int) -> None:
    _EXECUTED[run] = _EXECUTED.pop(run, 0) + count  # (re)inserted last: the dict's order is by latest use
    while len(_EXECUTED) > EXECUTED_RUNS_KEPT:
        del _EXECUTED[next(iter(_EXECUTED))]


def executed_items() -> dict[str, int]:
    """Worker side: how many items this worker process has run, per run name (its latest runs)."""
    return dict(_EXECUTED)


_short_repr = attempts._short_repr


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
