"""``hpcbridge demo``: a real computation on a local cluster started the way a batch job starts.

The demo submits a scheduler-file job to the local backend, attaches through the scheduler file,
and sums the distinct prime factors of every integer in [2, B) with ``sympy.primefactors``,
the way users write it, split into ranges so that per-task overhead stays small.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from hpcbridge.backends.local_cluster import local_cluster
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


def run_demo(upper: int, workers: int, timeout: float = 120.0, say: Callable[[str], None] = print) -> DemoResult:
    """Start a local cluster of ``workers`` single-threaded workers, compute, and shut it down."""
    started = time.perf_counter()
    with local_cluster(workers, timeout=timeout, say=say, job_name="hpcbridge-demo") as (job, bridge):
        pieces = max(workers * 8, math.ceil((upper - 2) / CHUNK_NUMBERS))
        compute_start = time.perf_counter()
        total = sum(bridge.gather(bridge.map(sum_prime_factors, split_range(2, upper, pieces))))
        compute_seconds = time.perf_counter() - compute_start
        dashboard = bridge.dashboard_link
    return DemoResult(upper, total, workers, compute_seconds, time.perf_counter() - started, dashboard,
                      job.job_id, job.scheduler_file)
