"""The handle of a submitted job: its id, its batch system, where its scheduler file appears.

Both sides use it: the login node's submit returns one, and a client that attached through a
scheduler file asks it whether the job still runs and why it ended.

This module also owns the job's record (``$HPCBRIDGE_HOME/submitted/<scheduler>-<id>.json``,
owner-only), which lets ``hpcbridge connect JOB`` and ``cancel JOB`` find the scheduler file from
the job id alone, and the records of the worker jobs that joined a cluster, in a folder beside
it (``<scheduler>-<id>.joined/``, one file per job, so two joins at once never overwrite each
other): a cancel of the cluster ends them too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from hpcbridge import scheduler_file as files
from hpcbridge.backends import BatchCommandError, JobNotFound, JobStatus, get_backend
from hpcbridge.private_files import make_private_dir, state_home, write_private_file

RECORDS = "submitted"  # the kind of state_home that holds the records


@dataclass(frozen=True)
class SubmittedJob:
    """A submitted job: its id, its batch system, and where its scheduler file will appear.

    A job array (array mode) starts no Dask cluster and has no scheduler file; nor has a worker
    job that joined another job's cluster (``joins`` names that job).
    """

    job_id: str
    scheduler: str
    scheduler_file: str | None
    joins: str | None = None

    def status(self) -> JobStatus:
        """The job's state now, in the batch system's words (see :class:`~hpcbridge.backends.JobStatus`).

        A job the batch system no longer knows is reported as UNKNOWN with the reason, not raised.
        """
        try:
            return get_backend(self.scheduler).status(self.job_id)
        except JobNotFound as error:
            return JobStatus(self.job_id, "UNKNOWN", reason=str(error))

    def alive(self) -> tuple[bool, JobStatus]:
        """Whether the job may still run (pending, running, completing), with the status that says so."""
        status = self.status()
        return status.state in ("PENDING", "RUNNING", "COMPLETING"), status

    def cancel(self) -> JobStatus | None:
        """End the job (and with it the Dask cluster); remove its scheduler file and certificates.

        The worker jobs that joined the cluster (:meth:`joined`) are cancelled first, so none is
        left waiting for a scheduler that is gone. Returns None when the job was cancelled now,
        or its final status when it had already ended (nothing is sent to the batch system then).
        Run directories are kept.
        """
        failed: BaseException | None = None
        for worker_job in self.joined():
            try:
                worker_job.cancel()
            except (BatchCommandError, JobNotFound) as error:
                failed = failed or error  # the cluster is cancelled all the same; said after
        status = self._cancel_alone()
        if failed is not None:
            raise failed
        return status

    def _cancel_alone(self) -> JobStatus | None:
        running, status = self.alive()
        if running:
            try:
                get_backend(self.scheduler).cancel(self.job_id)
                status = None
            except (BatchCommandError, JobNotFound):
                running, status = self.alive()  # it ended meanwhile
                if running:
                    raise
        if self.scheduler_file:
            files.remove(self.scheduler_file, job_id=self.job_id)
        return status

    def log_path(self) -> Path | None:
        """Where the job's output goes."""
        return get_backend(self.scheduler).log_path(self.job_id)

    def as_dict(self) -> dict[str, str | None]:
        """Plain values, for ``--json`` and for MATLAB (``joins`` only for a worker job that joined a cluster)."""
        values = {"job_id": self.job_id, "scheduler": self.scheduler, "scheduler_file": self.scheduler_file}
        return {**values, "joins": self.joins} if self.joins else values

    def joined(self) -> list[SubmittedJob]:
        """The worker jobs submitted from this account to join this job's cluster, oldest first."""
        folder = _joined_folder(self.scheduler, self.job_id)
        try:
            paths = sorted(folder.glob("*.json"), key=lambda path: path.stat().st_mtime)
        except OSError:
            return []
        jobs = [_read(path) for path in paths]
        return [job for job in jobs if job is not None]

    def forget_record(self) -> None:
        """Remove this job's record (and its place beside the cluster it joined)."""
        (state_home(RECORDS) / f"{_name(self.scheduler, self.job_id)}.json").unlink(missing_ok=True)
        if self.joins:
            (_joined_folder(self.scheduler, self.joins) / f"{_name(self.scheduler, self.job_id)}.json").unlink(
                missing_ok=True)

    def record(self) -> None:
        """Keep this job's record (and, for a worker job that joined a cluster, its place beside the cluster's)."""
        write_private_file(make_private_dir(state_home(RECORDS)) / f"{_name(self.scheduler, self.job_id)}.json",
                           json.dumps(self.as_dict()))
        if self.joins:
            folder = make_private_dir(_joined_folder(self.scheduler, self.joins))
            write_private_file(folder / f"{_name(self.scheduler, self.job_id)}.json", json.dumps(self.as_dict()))


def records_home() -> Path:
    """The folder that holds a record of every job submitted from this account."""
    return state_home(RECORDS)


def recorded_jobs() -> list[tuple[SubmittedJob, dict[str, object]]]:
    """Every cluster job submitted from this account that still has a record, with what its record
    notes beside the job (:func:`note`), oldest first. Worker jobs that joined a cluster are not listed."""
    folder = state_home(RECORDS)
    try:
        paths = sorted(folder.glob("*.json"), key=lambda path: path.stat().st_mtime)
    except OSError:
        return []
    found = []
    for path in paths:
        job = _read(path)
        if job is not None:
            found.append((job, _notes(path)))
    return found


def note(job: SubmittedJob, **values: object) -> None:
    """Add ``values`` to the job's record (when it was submitted, its walltime and cores, when it was seen
    to start or end, ...): facts that ``hpcbridge list`` shows after the batch system has forgotten the job."""
    path = state_home(RECORDS) / f"{_name(job.scheduler, job.job_id)}.json"
    try:
        values = {**json.loads(path.read_text()), **values}
    except (OSError, ValueError):
        return
    write_private_file(path, json.dumps(values))


def recorded_notes(job: SubmittedJob) -> dict[str, object]:
    """What the job's record notes beside the job (empty when it has no record)."""
    return _notes(state_home(RECORDS) / f"{_name(job.scheduler, job.job_id)}.json")


def forget(job: SubmittedJob) -> None:
    """Remove the job's record and the records of the worker jobs that joined it."""
    job.forget_record()
    folder = _joined_folder(job.scheduler, job.job_id)
    for path in folder.glob("*.json"):
        (folder.parent / path.name).unlink(missing_ok=True)  # the worker job's own record: the same name
        path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass


def _notes(path: Path) -> dict[str, object]:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {key: value for key, value in values.items() if key not in ("job_id", "scheduler", "scheduler_file", "joins")} \
        if isinstance(values, dict) else {}


def find_record(job_id: str, scheduler: str | None = None) -> SubmittedJob | None:
    """The job submitted from this account under ``job_id`` (on ``scheduler`` when given), if recorded."""
    candidates = [scheduler] if scheduler else ["local", "ssh", "slurm", "pbs", "lsf", "sge"]
    for name in candidates:
        job = _read(state_home(RECORDS) / f"{_name(name, job_id)}.json")
        if job is not None:
            return job
    return None


def _read(path: Path) -> SubmittedJob | None:
    try:
        values = json.loads(path.read_text())
        return SubmittedJob(job_id=str(values["job_id"]), scheduler=values["scheduler"],
                            scheduler_file=values.get("scheduler_file"), joins=values.get("joins"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _joined_folder(scheduler: str, job_id: str) -> Path:
    return state_home(RECORDS) / f"{_name(scheduler, job_id)}.joined"


def _name(scheduler: str, job_id: str) -> str:
    """A record's file name for a job: ``slurm-42``; characters a file name cannot hold become ``_``."""
    return f"{scheduler}-" + re.sub(r"[^\w.\[\]-]", "_", str(job_id))


def file_owner_running(info: files.ClusterInfo) -> tuple[bool | None, str]:
    """Whether the job that wrote scheduler file ``info`` may still run, and its state in words
    (None and the reason when its batch system is unknown here or does not answer)."""
    try:
        running, status = SubmittedJob(str(info.job_id), str(info.scheduler), str(info.path)).alive()
    except (ValueError, BatchCommandError) as error:
        return None, str(error)
    return running, status.state


# The lines a job script writes when its scheduler starts and once the scheduler file is published.
STARTING_LINE = "hpcbridge: waiting for the Dask scheduler"
READY_LINE = "hpcbridge: scheduler file ready"
WARNING_PREFIX = "hpcbridge: warning: "
ENDED_PREFIX = "hpcbridge: ended after "  # the scheduler ended itself (hpcbridge.cluster.idle_end): why, in words


@dataclass(frozen=True)
class JobSaid:
    """What a job's output says about its latest start: whether it published its scheduler file,
    what it warned of since (each warning without the ``hpcbridge: warning: `` prefix), and why
    its cluster ended itself, when it did (``ended after 30 min idle ...``)."""

    published: bool
    warnings: tuple[str, ...] = ()
    ended: str | None = None


def read_job_output(log: str | Path | None) -> JobSaid | None:
    """Read a job's output for :class:`JobSaid`; None when there is none to read (not yet, or removed).

    A requeued job that appends to its output starts again with :data:`STARTING_LINE`, which
    forgets what an earlier start said.
    """
    if not log:
        return None
    published, warnings, ended = False, [], None
    try:
        with open(log, errors="replace") as stream:
            for line in stream:
                if not line.startswith("hpcbridge: "):
                    continue
                if line.startswith(STARTING_LINE):
                    published, warnings, ended = False, [], None
                elif line.startswith(ENDED_PREFIX):
                    ended = line[len("hpcbridge: "):].rstrip("\n")
                elif line.startswith(READY_LINE):
                    published, warnings = True, []
                elif published and line.startswith(WARNING_PREFIX):
                    warnings.append(line[len(WARNING_PREFIX):].rstrip("\n"))
    except OSError:
        return None
    return JobSaid(published, tuple(warnings), ended)
