"""A throwaway cluster on this machine, started the way a batch job starts one.

The examples, the benchmarks, the worker-side workloads' drivers and ``hpcbridge demo`` all need
"a real cluster for this run": :func:`local_cluster` submits a scheduler-file job to the local
backend (the rendered script runs as local processes), attaches through the scheduler file, and
ends the job on exit. It sits with the backends because it is the local backend put to use; it
is the one module here that also attaches (it is the whole flow in miniature), so nothing below
``hpcbridge.job.submit`` imports it.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from hpcbridge.private_files import scheduler_files_home

if TYPE_CHECKING:
    from hpcbridge.backends.job import SubmittedJob
    from hpcbridge.client.bridge import Bridge


@contextmanager
def local_cluster(workers: int, timeout: float = 120.0, say: Callable[[str], None] = print,
                  job_name: str = "hpcbridge-local", threads_per_worker: int = 1, **spec_values: Any
                  ) -> Iterator[tuple[SubmittedJob, Bridge]]:
    """Start ``workers`` local workers as a scheduler-file job, attach, yield the job and the bridge.

    ``spec_values`` are further job options (e.g. ``mem_per_cpu="20M"`` for workers of many threads).

    On exit the cluster is shut down through the client, and the job cancelled if it is still
    running 30 s later (or if the body raised before the shutdown). A job that ended well leaves
    nothing behind (no record, log or folder: one set per run piled up); a job that did not keeps
    its log, and its id says where (``hpcbridge logs JOB``). SIGTERM and SIGHUP end the
    run the way Ctrl-C does, cleanup included: the job's processes run in a session of their own,
    so nothing else would stop them when a terminal closes or a batch system ends this process.
    """
    from hpcbridge.client.bridge import connect
    from hpcbridge.job import submit as jobs
    from hpcbridge.job.spec import JobSpec

    spec = JobSpec(scheduler="local", ntasks_per_node=workers, cpus_per_task=threads_per_worker,
                   python=sys.executable, job_name=job_name,
                   scheduler_file=str(scheduler_files_home() / "{job_id}" / "scheduler.json"), **spec_values)
    job = jobs.submit(spec)
    say(f"started local job {job.job_id}; waiting for {workers} worker(s) at {job.scheduler_file}")
    previous = _exit_on_termination()
    try:
        with connect(job.scheduler_file, n_workers=workers, timeout=timeout, job=job) as bridge:
            say(f"dashboard: {bridge.dashboard_link}")
            bridge.dashboard_shown = True  # said here: map does not say it again
            yield job, bridge
            bridge.shutdown()
        if wait_until_finished(job, timeout=30) and job.status().state == "COMPLETED":
            jobs.forget(job)
    finally:
        if not job.status().finished:
            job.cancel()
            wait_until_finished(job, timeout=30)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _exit_on_termination() -> dict[int, object]:
    """Turn SIGTERM and SIGHUP into ``SystemExit(128 + signal)``; return the handlers they replace.

    Only the main thread can install handlers; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}

    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    return {signum: signal.signal(signum, leave) for signum in (signal.SIGTERM, signal.SIGHUP)}


def wait_until_finished(job: SubmittedJob, timeout: float) -> bool:
    """Poll the job's state until it has ended or ``timeout`` s passed; True if it ended."""
    deadline = time.monotonic() + timeout
    while not job.status().finished:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True
