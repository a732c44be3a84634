"""Submit a spec as a batch job and follow it: the one place where render meets a backend.

Each submission leaves a small record (``$HPCBRIDGE_HOME/submitted/``, owner-only) of where the
job's scheduler file goes, so that ``hpcbridge connect JOB`` and ``hpcbridge cancel JOB`` find it
from the job id alone.
"""

from __future__ import annotations

import os
import time

from hpcbridge import scheduler_file as files
from hpcbridge.backends import get_backend
from hpcbridge.backends.job import SubmittedJob, file_owner_running, find_record, note
from hpcbridge.backends.job import forget as forget_records
from hpcbridge.job.render import render_script
from hpcbridge.job import spec as specs
from hpcbridge.job.spec import JOB_ID_PLACEHOLDER, JobSpec


def submit(spec: JobSpec) -> SubmittedJob:
    """Render ``spec`` and submit it; the script is complete before anything is submitted.

    A scheduler file without ``{job_id}`` may still hold an earlier job's address. When that
    job has ended the file (and its certificates) are removed before submitting, so a client
    that attaches right away cannot reach the old cluster; when it still runs, nothing is
    submitted and :class:`~hpcbridge.scheduler_file.SchedulerFileInUse` says which job holds it.
    """
    script = render_script(spec)
    has_cluster = spec.mode != "array"
    if has_cluster and JOB_ID_PLACEHOLDER not in spec.scheduler_file:
        files.claim(spec.scheduler_file, file_owner_running, specs.default_scheduler_file())
    job_id = get_backend(spec.scheduler).submit(script)
    scheduler_file = spec.scheduler_file_for(job_id) if has_cluster else None
    job = SubmittedJob(job_id=job_id, scheduler=spec.scheduler, scheduler_file=scheduler_file)
    job.record()
    note(job, submitted=time.time(), name=spec.job_name, mode=spec.mode, walltime=spec.walltime,
         cores=spec.tasks * spec.cpus_per_task, workers=spec.workers if has_cluster else None)
    return job


def find(job_id: str, scheduler: str | None = None) -> SubmittedJob | None:
    """The job submitted from this account under ``job_id`` (on ``scheduler`` when given), if recorded."""
    return find_record(job_id, scheduler)


def forget(job: SubmittedJob) -> None:
    """Remove what hpcbridge kept of an ended job: its record and those of the worker jobs that joined
    it, its scheduler file's folder when empty, and for a local job its folder (script, output, exit
    code). For throwaway clusters that ended well (the demo, the examples, the benchmarks), whose
    records and logs otherwise pile up."""
    forget_records(job)
    if job.scheduler_file:
        files.remove(job.scheduler_file, job_id=job.job_id)
    backend = get_backend(job.scheduler)
    if hasattr(backend, "forget"):
        backend.forget(job.job_id)


def default_scheduler_file(job_id: str) -> str:
    """The scheduler file a job writes when no ``--scheduler-file`` was given (from this state home)."""
    return os.path.expanduser(specs.default_scheduler_file().replace(JOB_ID_PLACEHOLDER, job_id))
