"""MATLAB's entry points for jobs: submit, status, cancel, list, logs, and connect that starts a cluster.

``matlab/+hpcbridge/submit.m`` and its siblings call these through MATLAB's ``py.`` interface; the
calls on a running cluster (map, gather, ...) are in :mod:`hpcbridge.client.matlab`. This module
sits above both the login node's side (:mod:`hpcbridge.job`) and the client's.

MATLAB passes name-value pairs as a struct (a ``dict``), numbers as ``float`` (a count typed as
``2`` is ``2.0``), char and string as ``str``, cells as ``tuple`` and logicals as ``bool``. The
option names are the command line's, in MATLAB's spelling or the CLI's: ``'NtasksPerNode'``,
``'ntasks_per_node'`` and ``'ntasks-per-node'`` are one option, and ``'Time'``, ``'Partition'``
are ``walltime`` and ``queue`` as on the command line. Every error is one line that names the
option as MATLAB spelled it.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Any

from hpcbridge.backends import get_backend
from hpcbridge.backends.job import SubmittedJob, read_job_output
from hpcbridge.client import matlab as cluster_calls
from hpcbridge.client.arguments import ArgumentError
from hpcbridge.client.matlab import matlab_warnings
from hpcbridge.job import submit as jobs
from hpcbridge.job.listing import list_clusters
from hpcbridge.job.spec import SCHEDULERS, JobSpec, SpecError, spec_fields

ALIASES = {"time": "walltime", "partition": "queue", "module": "modules", "client_arg": "client_args",
           "directive": "directives", "no_save_runs": None}
_FIELDS = {*spec_fields(), "ntasks"}


class OptionError(ValueError):
    """A job option's value that is not allowed, said with the option's name as MATLAB spelled it."""


def option_name(given: str) -> str:
    """The spec field for an option as MATLAB users spell it.

    >>> option_name("NtasksPerNode"), option_name("ntasks-per-node"), option_name("Time"), option_name("IdleTimeout")
    ('ntasks_per_node', 'ntasks_per_node', 'walltime', 'idle_timeout')
    """
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", str(given)).replace("-", "_").lower()
    return ALIASES.get(snake, snake) or snake


def spec_values(options: Any) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec's values from MATLAB's name-value pairs (a struct), and each field's name as MATLAB spelled it."""
    if not isinstance(options, dict):
        raise ArgumentError("options", options, "name-value pairs, e.g. 'Scheduler', 'slurm', 'Nodes', 2")
    values, spelled = {}, {}
    for given, value in options.items():
        field = option_name(given)
        if field not in _FIELDS:
            known = ", ".join(sorted(_matlab_spelling(name) for name in _FIELDS))
            raise ArgumentError(str(given), value, f"a known option; the options are {known}")
        values[field], spelled[field] = _value(str(given), value), str(given)
    return values, spelled


@matlab_warnings
def submit(options: Any) -> dict[str, Any]:
    """Submit a cluster job from name-value pairs; returns ``{"job_id", "scheduler", "scheduler_file"}``."""
    return jobs.submit(_spec(options)).as_dict()


@matlab_warnings
def connect(options: Any, n_workers: int | float = 1, timeout: float = 300.0) -> dict[str, Any]:
    """Submit a cluster job from name-value pairs and attach to it (:func:`hpcbridge.client.matlab.connect`);
    the result also names the job (``job_id``, ``scheduler``)."""
    job = jobs.submit(_spec(options))
    attached = cluster_calls.connect(job.scheduler_file, n_workers, timeout)
    return {**attached, "job_id": job.job_id, "scheduler": job.scheduler}


@matlab_warnings
def status(job_id: Any, scheduler: str = "") -> dict[str, Any]:
    """The job's state, why it waits or ended (``ended`` for a cluster that ended itself), its exit code and log."""
    job = _job(job_id, scheduler)
    state = get_backend(job.scheduler).status(job.job_id)
    said = read_job_output(state.log) if state.finished else None
    values = state.as_dict()
    values["ended"] = (said.ended if said is not None else None) or ""
    return {key: ("" if value is None else value) for key, value in values.items()}


@matlab_warnings
def cancel(job_id: Any, scheduler: str = "") -> str:
    """Cancel the job (and the worker jobs that joined it); returns what happened, in one line.

    The next call on its cluster in this MATLAB session says at once that it was cancelled.
    """
    job = _job(job_id, scheduler)
    ended = job.cancel()
    if job.scheduler_file:
        cluster_calls.cluster_ended(job.scheduler_file, f"you cancelled job {job.job_id} (hpcbridge.cancel)")
    if ended is None:
        return f"cancelled {job.job_id}"
    return f"job {job.job_id} had already ended: {ended.state}" + (f" ({ended.reason})" if ended.reason else "")


@matlab_warnings
def clusters(keep_finished: float = 7 * 24 * 3600.0) -> list[dict[str, Any]]:
    """My clusters (:func:`hpcbridge.job.listing.list_clusters`): one dict each, unknown values as NaN or ''."""
    entries = []
    for entry in list_clusters(keep_finished=float(keep_finished)):
        values = entry.as_dict()
        for key in ("workers", "walltime_left", "core_hours", "submitted", "started", "ended_at"):
            values[key] = math.nan if values[key] is None else float(values[key])
        entries.append({key: ("" if value is None else value) for key, value in values.items()})
    return entries


@matlab_warnings
def logs(job_id: Any, scheduler: str = "", lines: int | float = 0) -> str:
    """The job's output as text (its last ``lines`` lines; 0: all)."""
    from hpcbridge.job.follow import output_path

    job = _job(job_id, scheduler)
    count = cluster_calls.arguments.count("lines", lines)
    path = output_path(job)
    if path is None or not path.exists():
        raise FileNotFoundError(f"no output for job {job.job_id} yet" + (f" at {path}" if path else ""))
    text = path.read_text(errors="replace").splitlines(keepends=True)
    return "".join(text[-count:] if count else text)


def _spec(options: Any) -> JobSpec:
    values, spelled = spec_values(options)
    try:
        return JobSpec.from_config(values)
    except SpecError as error:  # one line, naming the options as MATLAB spelled them
        raise OptionError(error.describe(lambda field: spelled.get(field, _matlab_spelling(field)))) from None


def _value(given: str, value: Any) -> Any:
    """A MATLAB value as the spec takes it: whole doubles as ints, cells as tuples of text."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise ArgumentError(given, value, "a whole number (or text such as '2h' for a duration)")
    if isinstance(value, (tuple, list)):
        return tuple(_value(given, item) for item in value)
    raise ArgumentError(given, value, "a number, a logical, text, or a cell array of text")


def _job(job_id: Any, scheduler: Any) -> SubmittedJob:
    """The job for an id as MATLAB passes it (text, or a number such as 4242) and an optional batch system."""
    if isinstance(job_id, numbers.Real) and not isinstance(job_id, bool) and float(job_id).is_integer():
        job_id = str(int(job_id))
    if not isinstance(job_id, str) or not re.fullmatch(r"[\w.\[\]-]{1,100}", job_id):
        raise ArgumentError("job", job_id, "a job id such as '4242' or 'local-1a2b3c4d', as hpcbridge.submit returned it")
    if scheduler not in ("", *SCHEDULERS):
        raise ArgumentError("Scheduler", scheduler, f"one of {', '.join(SCHEDULERS)}")
    found = jobs.find(job_id, scheduler or None)
    if found is not None:
        return found
    if not scheduler:
        import dask.config

        scheduler = job_id.split("-", 1)[0] if job_id.startswith(("local-", "ssh-")) else \
            dask.config.get("hpcbridge.scheduler", None) or "slurm"
    return SubmittedJob(job_id, scheduler, jobs.default_scheduler_file(job_id))


def _matlab_spelling(field: str) -> str:
    """``ntasks_per_node`` → ``NtasksPerNode``."""
    return "".join(part.capitalize() for part in field.split("_"))
