"""A cluster that nobody uses ends itself: a scheduler preload that watches for clients and tasks.

A fixed-size cluster left behind (a notebook closed, a MATLAB session ended) would otherwise run,
and be charged, until its walltime. The job runs the scheduler with ``--preload
hpcbridge.cluster.idle_end`` and the timeout in ``HPCBRIDGE_IDLE_TIMEOUT`` (seconds); once the
scheduler has had no connected client and no task to run for that long, it writes one line to
the job's output (:data:`ENDED_PREFIX`, which ``hpcbridge status`` reads to say why the job ended)
and closes, and the job ends as after ``shutdown()``. Its runs stay on disk.

Dask's own ``idle_timeout`` is not used: it counts only tasks, so it would end a cluster under a
client that holds it between two maps (a MATLAB session that thinks, a notebook's next cell). Nor
are the scheduler's ``clients`` counted: a published run holds the scheduler's keys under a client
of its own name (``published-<run>``) with no connection; only connected clients
(``client_comms``) are, and tasks that wait, run or are queued.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from typing import Any

from tornado.ioloop import PeriodicCallback

from hpcbridge.backends.job import ENDED_PREFIX

TIMEOUT_VARIABLE = "HPCBRIDGE_IDLE_TIMEOUT"
CALLBACK = "hpcbridge-idle-end"

logger = logging.getLogger(__name__)


def describe_seconds(seconds: float) -> str:
    """``30 min``, ``20 s``, ``2 h`` or ``1 h 30 min``: a timeout as a person says it.

    >>> describe_seconds(1800), describe_seconds(20), describe_seconds(7200), describe_seconds(5400)
    ('30 min', '20 s', '2 h', '1 h 30 min')
    """
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours} h" if hours else "", f"{minutes} min" if minutes else "", f"{seconds} s" if seconds else ""]
    return " ".join(part for part in parts if part) or "0 s"


def ended_line(timeout: float) -> str:
    """The line the job's output gets when its cluster ends idle."""
    return f"{ENDED_PREFIX}{describe_seconds(timeout)} idle: no client and no task for that long"


def end_saying(scheduler: Any, line: str, reason: str) -> asyncio.Future[Any]:
    """How a cluster ends itself: ``line`` (an :data:`ENDED_PREFIX` line, which ``hpcbridge status`` reads)
    goes to the job's output and the log, and ``scheduler`` closes (``reason``: distributed's word for it)."""
    print(line, file=sys.stderr, flush=True)
    logger.info("%s", line)
    return asyncio.ensure_future(scheduler.close(reason=reason))


class IdleWatch:
    """Ends the scheduler once it has had neither a connected client nor a task for ``timeout`` seconds."""

    def __init__(self, scheduler: Any, timeout: float) -> None:
        self.scheduler, self.timeout = scheduler, timeout
        self.idle_since = time.monotonic()
        self.ended = False
        self.closing: asyncio.Future[Any] | None = None

    def busy(self) -> bool:
        """True while a client is connected or a task waits, runs or is queued."""
        scheduler = self.scheduler
        if scheduler.client_comms:
            return True
        if scheduler.queued or scheduler.unrunnable:
            return True
        if any(ws.processing for ws in scheduler.workers.values()):
            return True
        return any(task.state in ("waiting", "processing", "no-worker", "queued") for task in scheduler.tasks.values())

    def check(self) -> None:
        """Called every few seconds on the scheduler's event loop."""
        if self.ended or self.scheduler.status.name in ("closing", "closed"):
            return
        now = time.monotonic()
        if self.busy():
            self.idle_since = now
            return
        if now - self.idle_since < self.timeout:
            return
        self.ended = True
        self.closing = end_saying(self.scheduler, ended_line(self.timeout), "hpcbridge-idle-timeout")


def dask_setup(scheduler: Any) -> None:
    """The preload's hook: watch ``scheduler`` when ``HPCBRIDGE_IDLE_TIMEOUT`` is a positive number of seconds."""
    text = os.environ.get(TIMEOUT_VARIABLE, "0")
    try:
        timeout = float(text)
    except ValueError:
        raise RuntimeError(f"hpcbridge.cluster.idle_end: {TIMEOUT_VARIABLE}={text!r} is not a number of seconds") \
            from None
    if timeout <= 0:
        return
    watch = IdleWatch(scheduler, timeout)
    interval = min(max(timeout / 10, 0.5), 10.0)
    scheduler.periodic_callbacks[CALLBACK] = PeriodicCallback(watch.check, interval * 1000)
