"""The handle of a submitted job: its id, its batch system, where its scheduler file appears.

Both sides use it: the login node's submit returns one, and a client that attached through a
scheduler file asks it whether the job still runs and why it ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpcbridge import scheduler_file as files
from hpcbridge.backends import BatchCommandError, JobNotFound, JobStatus, get_backend


@dataclass(frozen=True)
class SubmittedJob:
    """A submitted job: its id, its batch system, and where its scheduler file will appear.

    A job array (array mode) starts no Dask cluster and has no scheduler file.
    """

    job_id: str
    scheduler: str
    scheduler_file: str | None

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

        Returns None when the job was cancelled now, or its final status when it had already
        ended (nothing is sent to the batch system then). Run directories are kept.
        """
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
        """Plain values, for ``--json`` and for MATLAB."""
        return {"job_id": self.job_id, "scheduler": self.scheduler, "scheduler_file": self.scheduler_file}


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


@dataclass(frozen=True)
class JobSaid:
    """What a job's output says about its latest start: whether it published its scheduler file,
    and what it warned of since (each warning without the ``hpcbridge: warning: `` prefix)."""

    published: bool
    warnings: tuple[str, ...] = ()


def read_job_output(log: str | Path | None) -> JobSaid | None:
    """Read a job's output for :class:`JobSaid`; None when there is none to read (not yet, or removed).

    A requeued job that appends to its output starts again with :data:`STARTING_LINE`, which
    forgets what an earlier start said.
    """
    if not log:
        return None
    published, warnings = False, []
    try:
        with open(log, errors="replace") as stream:
            for line in stream:
                if not line.startswith("hpcbridge: "):
                    continue
                if line.startswith(STARTING_LINE):
                    published, warnings = False, []
                elif line.startswith(READY_LINE):
                    published, warnings = True, []
                elif published and line.startswith(WARNING_PREFIX):
                    warnings.append(line[len(WARNING_PREFIX):].rstrip("\n"))
    except OSError:
        return None
    return JobSaid(published, tuple(warnings))
