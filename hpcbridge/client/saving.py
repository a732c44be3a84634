"""Saying that a run's chunks could not be saved in its run directory, where the user looks.

Workers save every finished chunk (:mod:`hpcbridge.cluster.chunks`). A save that fails (the disk
is full, the folder was deleted or turned read-only) leaves that chunk's result in the cluster's
memory only, and the worker tells the scheduler why (an event). At gather the client compares the
chunks it collected from the cluster with the chunk files, and warns with the folder, the reason
and how many chunks are only in memory (:func:`warn_not_saved`); a run that was lost says the
same in its error (:func:`explain_lost`), with how many items had been computed. A run folder that
cannot be removed after a gather is said too (:func:`remove_folder`).
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import warnings
from typing import Any

from distributed import Client

from hpcbridge.client.losses import RunLost
from hpcbridge.client.runs import Run
from hpcbridge.cluster.chunks import NOT_SAVED_TOPIC
from hpcbridge.rundir import RunDirectory, RunDirectoryWarning, failure_text


def not_saved(run: Run) -> list[tuple[int, int]]:
    """The chunks of ``run`` collected from the cluster (not read from disk) that no saved chunk holds: the
    same bounds, or a longer one from the same item (a retry that computed a cut chunk whole saved that)."""
    if not run.directory:
        return []
    ends: dict[int, int] = {}
    for low, high in RunDirectory(run.directory).saved():
        ends[low] = max(high, ends.get(low, high))
    return [(low, high) for (low, high), future in zip(run.bounds, run.futures)
            if future is not None and ends.get(low, low) < high]


def reason(client: Client, run: Run) -> str:
    """Why chunks of ``run`` were not saved: a worker's own words (passed on to the client that started the
    run as they happened, or asked of the scheduler), else what writing a file into the folder from here says."""
    if run.save_errors:
        return run.save_errors[-1]
    if client.status == "running":
        try:
            events = client.get_events(NOT_SAVED_TOPIC)
        except Exception:  # noqa: BLE001 -- the scheduler is going away: ask the folder instead
            events = ()
        for _, event in reversed(events):
            if isinstance(event, dict) and event.get("run") == run.name and event.get("directory") == run.directory:
                return f"{event.get('error')} (on worker {event.get('worker')})"
    assert run.directory is not None
    if not os.path.isdir(run.directory):
        return f"[Errno {errno.ENOENT}] {os.strerror(errno.ENOENT)} (the folder no longer exists)"
    error = RunDirectory(run.directory).write_error()
    if error is not None:
        return failure_text(error)
    return "the reason is not known: the folder can be written from here now"


def warn_not_saved(client: Client, run: Run, stacklevel: int = 2) -> None:
    """Warn (:class:`RunDirectoryWarning`) when chunks of ``run`` are only in memory, naming the folder and why."""
    missing = not_saved(run)
    if not missing:
        return
    items = sum(high - low for low, high in missing)
    warnings.warn(f"run {run.name!r}: {len(missing)} of {len(run.bounds)} chunks ({items} of {run.n_items} items) "
                  f"were not saved in {run.directory}: {reason(client, run)}; their results came from the "
                  "cluster's memory only (had the cluster ended first, they would have been lost): make room there "
                  "or fix the folder, or map(..., save=False) not to save", RunDirectoryWarning,
                  stacklevel=stacklevel + 1)


def explain_lost(lost: RunLost, client: Client, run: Run) -> None:
    """Complete a lost run's error: how many items the cluster had computed (also those lost with it since),
    and, when computed results are not on disk, why saving them failed."""
    missing = {tuple(bounds) for bounds in lost.missing}
    lost.computed = lost.done + sum(high - low for low, high in run.computed if (low, high) in missing)
    if run.directory and (lost.saved < lost.computed or not os.path.isdir(run.directory)):
        lost.save_error = reason(client, run)


def remove_folder(path: str, run: str, stacklevel: int = 2) -> None:
    """Remove a run's folder; warn (:class:`RunDirectoryWarning`) when it stays, with the reason."""
    errors: list[BaseException] = []

    def note(function: Any, name: str, error: Any) -> None:
        errors.append(error[1] if isinstance(error, tuple) else error)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=note)
    else:
        shutil.rmtree(path, onerror=note)
    if os.path.lexists(path):
        why = failure_text(errors[0]) if errors else "the reason is not known"
        warnings.warn(f"run {run!r}: its run directory {path} could not be removed ({why}); its results are "
                      "collected: remove it yourself once it can be", RunDirectoryWarning, stacklevel=stacklevel + 1)
