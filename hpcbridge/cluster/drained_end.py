"""A cluster whose workers all left before the walltime ends itself: a scheduler preload (mpi mode).

Before the walltime every worker drains and leaves (:mod:`hpcbridge.cluster.drain`). In
scheduler-file mode the job script then stops the scheduler and the job ends at once. In mpi
mode the scheduler is rank 0 of one MPI program, which holds every node of the allocation until
it ends: without this preload it ran on, idle, until the batch system killed the job at its
walltime (the margin, 5 minutes by default, of every node charged for nothing) and the job
ended as TIMEOUT. With it, once the scheduler has had no worker for :data:`GRACE_SECONDS` and at
least one left for the walltime (an ``hpcbridge-drain`` event), it writes one line to the job's
output (:data:`~hpcbridge.backends.job.ENDED_PREFIX`, which ``hpcbridge status`` reads) and
closes: dask-mpi's rank 0 returns and the job ends. The grace lets a waiting client read every
worker's event first (it looks every 2 s, :mod:`hpcbridge.client.watch`), so that it says how
many workers left for the walltime.

The job's mpi program adds this preload when workers drain (``--drain``) and no client script
runs in the job: a script in the job ends the cluster itself when it returns.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tornado.ioloop import PeriodicCallback

from hpcbridge.backends.job import ENDED_PREFIX
from hpcbridge.cluster.drain import job_end
from hpcbridge.cluster.idle_end import end_saying
from hpcbridge.leaving import EVENT_TOPIC

CALLBACK = "hpcbridge-drained-end"
CHECK_SECONDS = 1.0
GRACE_SECONDS = 5.0  # without workers this long before closing: clients read the drain events first


def ended_line(before_end: float) -> str:
    """The line the job's output gets when its cluster ends because every worker left for the walltime."""
    return (f"{ENDED_PREFIX}every worker left before the walltime ({before_end:.0f} s before it); "
            "finished chunks are saved: map the same run name in a new job to compute only the rest")


class DrainedWatch:
    """Closes the scheduler once no worker is left and a worker left for the walltime."""

    def __init__(self, scheduler: Any, end: float) -> None:
        self.scheduler, self.end = scheduler, end
        self.closing: asyncio.Future | None = None
        self.drained_since: float | None = None  # when it was first seen without workers, after a drain

    def check(self) -> None:
        if self.closing is not None:
            return
        if self.scheduler.workers or not self.scheduler.get_events(EVENT_TOPIC):
            self.drained_since = None
            return
        self.drained_since = self.drained_since or time.monotonic()
        if time.monotonic() - self.drained_since < GRACE_SECONDS:
            return
        self.closing = end_saying(self.scheduler, ended_line(self.end - time.time()),
                                  "hpcbridge-drain-before-walltime")


def dask_setup(scheduler: Any) -> None:
    """The preload's hook: watch ``scheduler`` when its job has a known end (``HPCBRIDGE_JOB_END``)."""
    end = job_end()
    if end is None:
        return
    watch = DrainedWatch(scheduler, end)
    scheduler.periodic_callbacks[CALLBACK] = PeriodicCallback(watch.check, CHECK_SECONDS * 1000)
