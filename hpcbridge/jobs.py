"""Submit a spec as a batch job and follow it: the one place where render meets a backend.

Each submission leaves a small record (``$HPCBRIDGE_HOME/submitted/``, owner-only) of where the
job's scheduler file goes, so that ``hpcbridge connect JOB`` and ``hpcbridge cancel JOB`` find it
from the job id alone.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from hpcbridge import scheduler_file as files
from hpcbridge.backends import BatchCommandError, JobNotFound, JobStatus, get_backend
from hpcbridge.private_files import make_private_dir, write_private_file
from hpcbridge.render import render_script
from hpcbridge.spec import DEFAULT_SCHEDULER_FILE, JOB_ID_PLACEHOLDER, JobSpec

TCP_WARNING = ("protocol tcp: the cluster is not encrypted, and anyone who can reach the scheduler's "
               "port can run code as you")


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


def submit(spec: JobSpec) -> SubmittedJob:
    """Render ``spec`` and submit it; the script is complete before anything is submitted.

    A scheduler file without ``{job_id}`` may still hold an earlier job's address. When that
    job has ended the file (and its certificates) are removed before submitting, so a client
    that attaches right away cannot reach the old cluster; when it still runs, nothing is
    submitted and :class:`~hpcbridge.scheduler_file.SchedulerFileInUse` says which job holds it.
    """
    script = render_script(spec)
    has_cluster = spec.mode != "array"
    if has_cluster and spec.protocol == "tcp":
        warnings.warn(TCP_WARNING, UserWarning, stacklevel=2)
    if has_cluster and JOB_ID_PLACEHOLDER not in spec.scheduler_file:
        claim_scheduler_file(Path(spec.scheduler_file).expanduser())
    job_id = get_backend(spec.scheduler).submit(script)
    scheduler_file = spec.scheduler_file_for(job_id) if has_cluster else None
    job = SubmittedJob(job_id=job_id, scheduler=spec.scheduler, scheduler_file=scheduler_file)
    _write_record(job)
    return job


def claim_scheduler_file(path: Path) -> None:
    """Make ``path`` free for a new cluster: remove a stale file, refuse one a live cluster uses."""
    try:
        info = files.read(path)
    except FileNotFoundError:
        files.remove(path)  # certificates of a job that left no file
        return
    except files.SchedulerFileError as error:
        raise files.SchedulerFileInUse(f"{error}; hpcbridge does not replace it: remove it or choose another "
                                       "--scheduler-file") from None
    if info.describes_job:
        owner = SubmittedJob(info.job_id, info.scheduler, str(path))
        try:
            running, status = owner.alive()
        except (ValueError, BatchCommandError) as error:  # an unknown batch system, or it does not answer
            raise files.SchedulerFileInUse(
                f"{path} belongs to {info.job_label()}, whose state cannot be checked ({error}); "
                "it is not replaced: choose another --scheduler-file") from None
        if running:
            raise files.SchedulerFileInUse(
                f"{path} belongs to {info.job_label()}, which is still {status.state}: choose another "
                f"--scheduler-file (the default, {DEFAULT_SCHEDULER_FILE}, is one per job) or cancel job "
                f"{info.job_id} first")
    elif files.address_answers(info.address):
        raise files.SchedulerFileInUse(
            f"{path} belongs to a running scheduler at {info.address} (a cluster hpcbridge did not start): "
            "choose another --scheduler-file")
    files.remove(path)


def records_home() -> Path:
    """Where the records of submitted jobs are kept."""
    return Path(os.environ.get("HPCBRIDGE_HOME", "~/.hpcbridge")).expanduser() / "submitted"


def find(job_id: str, scheduler: str | None = None) -> SubmittedJob | None:
    """The job submitted from this account under ``job_id`` (on ``scheduler`` when given), if recorded."""
    candidates = [scheduler] if scheduler else ["local", "ssh", "slurm", "pbs", "lsf"]
    for name in candidates:
        record = records_home() / f"{name}-{_safe(job_id)}.json"
        try:
            values = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        return SubmittedJob(job_id=str(values["job_id"]), scheduler=values["scheduler"],
                            scheduler_file=values.get("scheduler_file"))
    return None


def default_scheduler_file(job_id: str) -> str:
    """The scheduler file a job writes when no ``--scheduler-file`` was given."""
    return os.path.expanduser(DEFAULT_SCHEDULER_FILE.replace(JOB_ID_PLACEHOLDER, job_id))


def _write_record(job: SubmittedJob) -> None:
    folder = make_private_dir(records_home())
    write_private_file(folder / f"{job.scheduler}-{_safe(job.job_id)}.json", json.dumps(job.as_dict()))


def _safe(job_id: str) -> str:
    return re.sub(r"[^\w.\[\]-]", "_", job_id)
