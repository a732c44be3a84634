"""``hpcbridge demo``: a real computation on a local cluster started the way a batch job starts.

The demo submits a scheduler-file job to the local backend, attaches through the scheduler file,
and sums the distinct prime factors of every integer in [2, B) with ``sympy.primefactors``,
the way users write it, split into ranges so that per-task overhead stays small.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hpcbridge import jobs
from hpcbridge.backends.local import state_home
from hpcbridge.bridge import Bridge, connect
from hpcbridge.spec import JobSpec
from hpcbridge.workloads.primes import split_range, sum_prime_factors

CHUNK_NUMBERS = 20_000


@dataclass(frozen=True)
class DemoResult:
    """What the demo computed and how."""

    upper: int
    total: int
    workers: int
    compute_seconds: float
    total_seconds: float
    dashboard: str
    job_id: str
    scheduler_file: str


@contextmanager
def local_cluster(workers: int, timeout: float = 120.0, say: Callable[[str], None] = print,
                  job_name: str = "hpcbridge-demo", threads_per_worker: int = 1
                  ) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    """Start a local cluster as a scheduler-file job, attach, and yield the job and the bridge.

    The cluster is started the way a batch job starts it (the local backend runs the rendered
    script), and ended on exit: shut down through the client, and cancelled if it is still running.
    """
    spec = JobSpec(scheduler="local", ntasks_per_node=workers, cpus_per_task=threads_per_worker,
                   python=sys.executable, job_name=job_name,
                   scheduler_file=str(state_home() / "{job_id}" / "scheduler.json"))
    job = jobs.submit(spec)
    say(f"started local job {job.job_id}; waiting for {workers} worker(s) at {job.scheduler_file}")
    try:
        with connect(job.scheduler_file, n_workers=workers, timeout=timeout, job=job) as bridge:
            say(f"dashboard: {bridge.dashboard_link}")
            yield job, bridge
            bridge.shutdown()
        _wait_until_finished(job, timeout=30)
    finally:
        if not job.status().finished:
            job.cancel()
            _wait_until_finished(job, timeout=30)


def run_demo(upper: int, workers: int, timeout: float = 120.0, say: Callable[[str], None] = print) -> DemoResult:
    """Start a local cluster of ``workers`` single-threaded workers, compute, and shut it down."""
    started = time.perf_counter()
    with local_cluster(workers, timeout=timeout, say=say) as (job, bridge):
        pieces = max(workers * 8, math.ceil((upper - 2) / CHUNK_NUMBERS))
        compute_start = time.perf_counter()
        total = sum(bridge.gather(bridge.map(sum_prime_factors, split_range(2, upper, pieces))))
        compute_seconds = time.perf_counter() - compute_start
        dashboard = bridge.dashboard_link
    return DemoResult(upper, total, workers, compute_seconds, time.perf_counter() - started, dashboard,
                      job.job_id, job.scheduler_file)


def _wait_until_finished(job: jobs.SubmittedJob, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not job.status().finished and time.monotonic() < deadline:
        time.sleep(0.2)
