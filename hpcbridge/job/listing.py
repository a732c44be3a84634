"""My clusters: every cluster job submitted from this account, on every batch system it used, as it stands now.

The list is made of the job records that submit leaves (``$HPCBRIDGE_HOME/submitted/``), so it
covers every batch system this machine submitted to, asked with one batched status question per
system (:func:`hpcbridge.backends.base.statuses`). For each cluster it gives its state, its
workers (asked of the scheduler, briefly, when it runs; else unknown), the walltime left and the
core-hours used so far (its cores times the time since its scheduler started: what the batch
system charges for a fixed-size allocation).

What the batch system forgets (a finished Slurm job after ``MinJobAge``) the record keeps: when
the cluster started and ended, how, and why (``ended after 30 min idle``). A finished cluster
stays in the list for :data:`KEEP_FINISHED` seconds after it ended; then its record (and a local
job's folder of script and output) is removed. Runs saved on disk are never touched.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hpcbridge import scheduler_file as files
from hpcbridge.backends import JobStatus, get_backend
from hpcbridge.backends.base import statuses
from hpcbridge.backends.job import SubmittedJob, forget, note, read_job_output, recorded_jobs
from hpcbridge.private_files import state_home

KEEP_FINISHED = 7 * 24 * 3600  # seconds a finished cluster stays listed
WORKERS_TIMEOUT = 3.0  # seconds to ask the running schedulers for their workers, all at once
FINAL_STATES = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")


@dataclass(frozen=True)
class ClusterEntry:
    """One line of ``hpcbridge list``: a cluster job and how it stands.

    ``workers`` is None when the scheduler was not asked or did not answer in time; ``walltime_left``
    (seconds) only for a running cluster with a walltime; ``core_hours`` is None until the cluster
    started. ``ended`` says why a cluster ended itself (``ended after 30 min idle ...``).
    """

    job_id: str
    scheduler: str
    name: str | None
    state: str
    workers: int | None = None
    walltime_left: int | None = None
    core_hours: float | None = None
    reason: str | None = None
    ended: str | None = None
    scheduler_file: str | None = None
    submitted: float | None = None
    started: float | None = None
    ended_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for ``--json`` and for MATLAB."""
        return {**asdict(self), "finished": self.finished}


def list_clusters(keep_finished: float = KEEP_FINISHED, workers_timeout: float = WORKERS_TIMEOUT) -> list[ClusterEntry]:
    """Every cluster job submitted from this account that is running, waiting, or ended less than
    ``keep_finished`` seconds ago, oldest first; older records are removed (see the module's docstring)."""
    now = time.time()
    records = recorded_jobs()
    found: dict[tuple[str, str], JobStatus] = {}
    problems: dict[tuple[str, str], str] = {}
    for scheduler in dict.fromkeys(job.scheduler for job, _ in records):
        ids = [job.job_id for job, _ in records if job.scheduler == scheduler]
        errors: dict[str, Exception] = {}
        try:
            answered = statuses(get_backend(scheduler), ids, errors)
        except ValueError as error:  # a batch system this hpcbridge no longer knows
            answered, errors = {}, {job_id: error for job_id in ids}
        found.update({(scheduler, job_id): status for job_id, status in answered.items()})
        problems.update({(scheduler, job_id): _first_line(error) for job_id, error in errors.items()})
    entries = [_entry(job, notes, found.get((job.scheduler, job.job_id)), problems.get((job.scheduler, job.job_id)),
                      now) for job, notes in records]
    kept = []
    for (job, _), entry in zip(records, entries):
        ended = entry.ended_at if entry.finished or entry.state == "UNKNOWN" else None
        if ended is not None and now - ended > keep_finished:
            _clean_up(job)
        else:
            kept.append(entry)
    running = {(entry.scheduler, entry.job_id): entry.scheduler_file for entry in kept
               if entry.state == "RUNNING" and entry.scheduler_file}
    counts = count_workers(running, workers_timeout) if running else {}
    return [_with_workers(entry, counts.get((entry.scheduler, entry.job_id))) for entry in kept]


def _entry(job: SubmittedJob, notes: dict[str, Any], status: JobStatus | None, problem: str | None,
           now: float) -> ClusterEntry:
    """The entry for one record, noting in the record what the batch system may forget."""
    state = status.state if status is not None else "?"
    reason = status.reason if status is not None else problem
    started = notes.get("started")
    if state == "UNKNOWN" and notes.get("state") in FINAL_STATES:  # forgotten by the batch system: as recorded
        state, reason = str(notes["state"]), notes.get("reason")
    elif state == "UNKNOWN":
        if "unknown_since" not in notes:
            note(job, unknown_since=now)
        notes = {**notes, "ended_at": notes.get("unknown_since", now)}
    if state in ("RUNNING", "COMPLETING") and started is None and job.scheduler_file:
        try:
            started = Path(job.scheduler_file).stat().st_mtime  # published when the scheduler started
            note(job, started=started)
        except OSError:
            pass
    if status is not None and status.log and notes.get("log") != status.log:
        note(job, log=status.log)
    ended_at, ended = notes.get("ended_at"), notes.get("ended")
    if state in FINAL_STATES and notes.get("state") not in FINAL_STATES and status is not None:
        said = read_job_output(status.log)
        ended = said.ended if said is not None else None
        ended_at = _last_write(status.log) or now
        note(job, state=state, reason=reason, ended=ended, ended_at=ended_at, exit_code=status.exit_code)
    walltime, cores = notes.get("walltime"), notes.get("cores")
    left = None
    if state == "RUNNING" and walltime and started:
        left = max(0, int(walltime - (now - started)))
    core_hours = None
    if cores and started:
        core_hours = cores * max(0.0, min(ended_at or now, now) - started) / 3600
    return ClusterEntry(job.job_id, job.scheduler, notes.get("name"), state, walltime_left=left,
                        core_hours=core_hours, reason=reason, ended=ended, scheduler_file=job.scheduler_file,
                        submitted=notes.get("submitted"), started=started, ended_at=ended_at)


def _with_workers(entry: ClusterEntry, workers: int | None) -> ClusterEntry:
    if workers is None:
        return entry
    values = asdict(entry)
    values["workers"] = workers
    return ClusterEntry(**values)


def _clean_up(job: SubmittedJob) -> None:
    """Forget a cluster that ended long ago: its record, and a local job's folder (script and output)."""
    forget(job)
    if job.scheduler in ("local", "ssh"):
        folder = state_home(job.scheduler) / job.job_id
        if job.job_id.startswith(f"{job.scheduler}-") and "/" not in job.job_id:
            shutil.rmtree(folder, ignore_errors=True)


def _last_write(log: str | None) -> float | None:
    """When the job's output was last written: about when it ended."""
    try:
        return Path(log).stat().st_mtime if log else None
    except OSError:
        return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def count_workers(scheduler_files: dict[Any, str], timeout: float = WORKERS_TIMEOUT) -> dict[Any, int]:
    """The workers each running scheduler has now, asked of all at once for up to ``timeout`` seconds;
    a scheduler that does not answer in time (or whose file is gone) is left out."""

    async def one(path: str) -> int:
        from distributed.core import rpc

        info = files.read(path)
        arguments = info.certificates.security().get_connection_args("client") if info.certificates else {}
        scheduler = rpc(info.address, timeout=timeout, connection_args=arguments)
        try:
            return len(await scheduler.ncores())
        finally:
            await scheduler.close_rpc()

    async def every() -> list[Any]:
        asked = [asyncio.wait_for(one(path), timeout) for path in scheduler_files.values()]
        return await asyncio.gather(*asked, return_exceptions=True)

    with concurrent.futures.ThreadPoolExecutor(1) as thread:  # its own event loop, also under a notebook's
        answers = thread.submit(asyncio.run, every()).result()
    return {key: answer for key, answer in zip(scheduler_files, answers) if isinstance(answer, int)}


def format_seconds(seconds: int | None) -> str:
    """``1:05:00``, ``2-03:00:00`` or ``-``.

    >>> format_seconds(3900), format_seconds(183600), format_seconds(None)
    ('1:05:00', '2-03:00:00', '-')
    """
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return (f"{days}-{hours:02d}" if days else f"{hours}") + f":{minutes:02d}:{seconds:02d}"


def table(entries: list[ClusterEntry]) -> list[str]:
    """The lines ``hpcbridge list`` prints: one per cluster, with a header."""
    rows = [("JOB", "SYSTEM", "NAME", "STATE", "WORKERS", "WALLTIME LEFT", "CORE-HOURS", "")]
    for entry in entries:
        why = entry.ended or (entry.reason if entry.state in ("PENDING", "?") or entry.finished else None) or ""
        rows.append((entry.job_id, entry.scheduler, entry.name or "-", entry.state,
                     "-" if entry.workers is None else str(entry.workers), format_seconds(entry.walltime_left),
                     "-" if entry.core_hours is None else f"{entry.core_hours:.2f}", why))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return [("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]).rstrip()
            for row in rows]

