"""Submit a spec as a batch job and follow it: the one place where render meets a backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hpcbridge.backends import JobStatus, get_backend
from hpcbridge.render import render_script
from hpcbridge.spec import JOB_ID_PLACEHOLDER, JobSpec


@dataclass(frozen=True)
class SubmittedJob:
    """A submitted job: its id, its batch system, and where its scheduler file will appear.

    A job array (array mode) starts no Dask cluster and has no scheduler file.
    """

    job_id: str
    scheduler: str
    scheduler_file: str | None

    def status(self) -> JobStatus:
        """The job's state now."""
        return get_backend(self.scheduler).status(self.job_id)

    def cancel(self) -> None:
        """End the job (and with it the Dask cluster)."""
        get_backend(self.scheduler).cancel(self.job_id)

    def log_path(self) -> Path | None:
        """Where the job's output goes."""
        return get_backend(self.scheduler).log_path(self.job_id)

    def as_dict(self) -> dict[str, str | None]:
        """Plain values, for ``--json`` and for MATLAB."""
        return {"job_id": self.job_id, "scheduler": self.scheduler, "scheduler_file": self.scheduler_file}


def submit(spec: JobSpec) -> SubmittedJob:
    """Render ``spec`` and submit it; the script is complete before anything is submitted.

    A scheduler file without ``{job_id}`` may still hold an earlier job's address; it is removed
    before submitting, so a client that attaches right away cannot reach the old cluster.
    """
    script = render_script(spec)
    has_cluster = spec.mode != "array"
    if has_cluster and JOB_ID_PLACEHOLDER not in spec.scheduler_file:
        Path(spec.scheduler_file).expanduser().unlink(missing_ok=True)
    job_id = get_backend(spec.scheduler).submit(script)
    scheduler_file = spec.scheduler_file_for(job_id) if has_cluster else None
    return SubmittedJob(job_id=job_id, scheduler=spec.scheduler, scheduler_file=scheduler_file)
