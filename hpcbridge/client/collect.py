"""Collecting a run: its chunks from the cluster or the run directory, joined in input order.

When items have no result anywhere, :func:`collect` raises the :mod:`hpcbridge.client.losses`
error of the cause, carrying every result there is.
"""

from __future__ import annotations

import itertools
import time
from typing import IO, Any

from distributed import Client, Future

from hpcbridge.client import run_records
from hpcbridge.client.futures import gather_results, wait_for
from hpcbridge.client.losses import RunError, RunLost
from hpcbridge.client.missing_modules import module_missing
from hpcbridge.client.planning import remember_estimate
from hpcbridge.client.progress import Progress
from hpcbridge.client.runs import Run, item_error_class, reattach, refresh_after_reconnect
from hpcbridge.client.stuck import Handoff, describe_running, running_items
from hpcbridge.client.tail import Balancer, hand_on_planned
from hpcbridge.client.watch import ClusterWatch
from hpcbridge.cluster.chunks import Pickled
from hpcbridge.rundir import RunDirectory, missing_ranges


def collect(client: Client, run: Run, stack: bool = False, timeout: float | None = None,
            progress: bool = True, stream: IO[str] | None = None, job: Any = None,
            drain_from: float | None = None) -> Any:
    """Wait for every chunk of ``run`` (showing progress) and return the results in input order.

    Chunks come from the cluster, or from the run directory when the cluster lost them or an
    earlier cluster saved them. Raises :class:`ItemError` for the first failing item (by index),
    :class:`RunError` when a chunk failed as a whole, a :class:`~hpcbridge.client.losses.RunLost` (one
    type per cause, said in the words of ``job``'s batch system) when items have no result
    anywhere, and ``TimeoutError`` after ``timeout`` seconds; the run stays on the cluster in
    every case, so ``results(name)`` can try again. ``drain_from`` (epoch seconds: when the
    job's workers may start leaving for its walltime) lets a loss after it be named as the
    walltime, also when the batch system calls the job COMPLETED because its workers left in time.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    meter = Progress(run.name, run.n_items, stream) if progress else None
    watch = ClusterWatch(client, drain_from)
    handoff = Handoff(client, run)
    balancer = Balancer(client, run)
    pending = [f for f in run.futures if f is not None]
    while pending:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            running = running_items(client, run.name) if client.status == "running" else []
            still = (f"; still running: {describe_running(running)} (the items before a running item in its chunk "
                     "are computed and come back with it; map(..., item_timeout=seconds) ends such items)"
                     if running else "")
            raise TimeoutError(
                f"run {run.name!r}: {run.done_items()} of {run.n_items} items done after {timeout:g} s{still}; "
                f"the results stay on the cluster: collect them later with results({run.name!r})")
        if client.status not in ("closing", "closed"):  # a closed client (it gave up) has no loop to wait in
            wait_for(client, pending, 0.5 if left is None else min(0.5, left), first=True)
        if meter:
            meter.update(run.done_items())
        lost = watch.lost(cancelled=any(f.status == "cancelled" for f in run.futures if f is not None))
        if not lost:
            refresh_after_reconnect(client, run)
            handoff.check()
            balancer.check()
        pending = [f for f in run.futures if f is not None and not f.done()]
        if lost:
            break
    if meter and not pending:
        meter.finish()
    run_records.flush(client, run.name)  # the balanced tail's last record is on the scheduler before we return
    try:
        return _assemble(client, run, stack, watch, job)
    except _HandedOff:  # another client handed part of a chunk to new tasks: the record lists them now
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        return collect(client, run, stack, left, progress, stream, job, drain_from)


class _HandedOff(Exception):
    """A chunk came back with fewer items than this run object lists for it, and the run's record on the
    scheduler has other chunks: the run object now has them."""


def _adopt_record(client: Client, run: Run) -> bool:
    """Take the chunks the scheduler's record of ``run`` lists, if they differ from the run's; True if taken."""
    if client.status != "running":
        return False
    try:
        fresh = reattach(client, run.name)
    except (KeyError, OSError):
        return False
    if fresh.bounds == run.bounds:
        return False
    run.bounds, run.futures = fresh.bounds, fresh.futures
    return True


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
            gathered = gather_results(client, [run.futures[i] for i in finished])
        except Exception:  # the cluster went away while sending: take what the disk has
            gathered = []
            watch.lost(cancelled=True)
    remember_estimate(client, run.estimate_key, run.bounds, gathered, finished)
    failed: dict[int, tuple[Any, ...]] = {}  # item index -> (item, error, remote traceback, worker or chunk number)
    rests = []  # the rests of cut chunks that no task computes yet
    for i, (values, errors, *_, rest) in zip(finished, gathered):
        low, high = run.bounds[i]
        values = values.values() if isinstance(values, Pickled) else values
        if len(values) > high - low:  # computed whole by a retry after a client cut it: the rest is elsewhere
            values = values[:high - low]
        elif len(values) < high - low:  # cut: the rest went to new tasks, which this run object may not list
            if _adopt_record(client, run):
                raise _HandedOff
            if rest is not None and rest["task"] is not None and (rest["at"], rest["stop"]) == (low + len(values), high):
                rests.append((run.futures[i].key, rest))  # the cut's answer never reached a client
            continue
        chunks[i], have[i] = values, True
        for index, entry in errors.items():
            if low <= index < high:
                failed[index] = (*entry[:3], entry[3] if len(entry) > 3 else i)
    if rests and client.status == "running":
        hand_on_planned(client, run, rests)  # the cuts' answers never reached a client
        raise _HandedOff
    _read_saved(directory, run.bounds, chunks, have)
    if failed:
        index = min(failed)
        item, error, remote, where = failed[index]
        if not isinstance(where, str):
            where = _worker_of(client, run.futures[where])
        missing = [bounds for bounds, ok in zip(run.bounds, have) if not ok]
        results = _results(run, chunks, have)
        for failing in failed:
            results[failing] = None
        raise item_error_class(error)(run.name, index, item, where, error, remote, results,
                                      {i: entry[1] for i, entry in sorted(failed.items())}, missing)
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
                failure = RunError(f"items {low}..{high - 1} of run {run.name!r} failed as a chunk: "
                                   f"{type(error).__name__}: {error}{_rest_words(run, have)}")
                failure.results = _results(run, chunks, have)
                failure.missing = [bounds for bounds, ok in zip(run.bounds, have) if not ok]
                raise failure from error
    missing = [bounds for bounds, ok in zip(run.bounds, have) if not ok]
    covered = sum(high - low for low, high in run.bounds)
    if covered < run.n_items:  # a run read from disk: chunks that no worker saved
        missing = sorted(missing + missing_ranges(run.n_items, run.bounds))
    if not missing:
        return join(chunks, stack)
    if cause is not None:
        cls, what = cause
    elif client.status == "running" and any(f is not None and f.status == "cancelled" for f in run.futures):
        cls, what = RunLost, "its tasks were cancelled on the cluster (a client released the run)"
    else:
        cls, what = RunLost, "the cluster does not hold this run, and its run directory lacks these items"
    results = _results(run, chunks, have)
    done = run.n_items - sum(high - low for low, high in missing)
    saved = min(run.n_items, directory.saved_items()) if directory is not None else 0
    raise cls(run.name, what, run.n_items, done, saved, missing, results,
              directory.path if directory else None, getattr(job, "job_id", None))


def _results(run: Run, chunks: list[Any], have: list[bool]) -> list[Any]:
    """One value per item of the run in input order, None where its chunk is not had."""
    results: list[Any] = [None] * run.n_items
    for (low, high), values, ok in zip(run.bounds, chunks, have):
        if ok:
            results[low:high] = list(values)
    return results


def _rest_words(run: Run, have: list[bool]) -> str:
    """What the other chunks hold, for an error about one chunk."""
    done = sum(high - low for (low, high), ok in zip(run.bounds, have) if ok)
    return f". {done} of the run's {run.n_items} items have results (in this error's .results, None for the others)"


def _read_saved(directory: RunDirectory | None, bounds: list[tuple[int, int]], chunks: list[Any],
                have: list[bool]) -> None:
    """Fill in, from the run directory, the chunks not had yet that a worker saved there."""
    if directory is None or all(have):
        return
    found = directory.load_chunks([bounds[i] for i, ok in enumerate(have) if not ok])
    for i, (low, high) in enumerate(bounds):
        if not have[i] and (low, high) in found:
            chunks[i], have[i] = found[(low, high)], True


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


def join(chunks: list[Any], stack: bool) -> Any:
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
