"""``hpcbridge demo``: a real computation on a local cluster started the way a batch job starts.

The demo submits a scheduler-file job to the local backend, attaches through the scheduler file,
and sums the distinct prime factors of every integer in [2, B) with ``sympy.primefactors``,
the way users write it, split into ranges so that per-task overhead stays small. Its progress
counts numbers, not the ranges the map's items are.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hpcbridge.client.progress import Progress
from hpcbridge.local_cluster import local_cluster
from hpcbridge.workloads.primes import split_range, sum_prime_factors

if TYPE_CHECKING:
    from hpcbridge.client.bridge import Bridge
    from hpcbridge.client.runs import Run

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
        ranges = split_range(2, upper, pieces)
        compute_start = time.perf_counter()
        run = bridge.map(sum_prime_factors, ranges, progress=False)  # the dashboard link is said already
        show_numbers_done(bridge, run, ranges)
        total = sum(bridge.gather(run, progress=False))
        compute_seconds = time.perf_counter() - compute_start
        dashboard = bridge.dashboard_link
    return DemoResult(upper, total, workers, compute_seconds, time.perf_counter() - started, dashboard,
                      job.job_id, job.scheduler_file)


def show_numbers_done(bridge: Bridge, run: Run, ranges: list[tuple[int, int]]) -> None:
    """Show the run's progress in numbers factored, until every range is done or the cluster is gone.

    The map's items are ranges, so its own progress ("16/16 items") would not say how far the
    sum is; this counts the numbers in the ranges of finished chunks instead.
    """
    from distributed import wait

    sizes = [high - low for low, high in ranges]
    meter = Progress("  factoring", sum(sizes), unit="numbers")
    pending = [future for future in run.futures if future is not None]
    while pending and bridge.connected:
        try:
            wait(pending, timeout=0.5, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        pending = [future for future in pending if not future.done()]
        meter.update(sum(sum(sizes[low:high]) for (low, high), future in zip(run.bounds, run.futures)
                         if future is None or future.done()))
    if not pending:
        meter.finish()
