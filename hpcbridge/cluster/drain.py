"""Worker side: leave before the batch job's walltime, without starting work that cannot finish.

The job script exports when the job ends (``HPCBRIDGE_JOB_END``, seconds since the epoch) and
the margin (``HPCBRIDGE_LIFETIME_MARGIN``, seconds, at least 30), and starts every worker with
``--preload hpcbridge.cluster.drain``. Each worker then:

- measures its chunks (:func:`record`); its margin is the larger of the job's margin and three
  times its longest chunk, so a worker whose chunks take long stops earlier;
- from ``end - margin - stagger`` on it is *draining*: a chunk that arrives is handed back to the
  scheduler (``distributed.Reschedule``), which gives it to a worker with time left, if any; a
  chunk is also handed back earlier when its expected duration would run past that point. The
  stagger, from a second (closing takes a moment) up to a third of the margin and different on
  each worker, makes the workers of one job leave one after another instead of all at once;
- it reports its leave time to the scheduler with every heartbeat (the worker metric
  ``hpcbridge_leave_at``), so that an adaptive cluster submits a replacement job before it leaves;
- once it runs no chunk any more, it logs an ``hpcbridge-drain`` event on the scheduler (clients
  read it to say that the walltime, not a fault, ended the run) and closes gracefully.

Every finished chunk is on disk already (:mod:`hpcbridge.rundir`), so the last worker leaving
loses nothing, although Dask logs that it could not move that worker's unique data.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from typing import Any

from hpcbridge.leaving import EVENT_TOPIC, LEAVE_METRIC

MINIMUM_MARGIN = 30.0
POLL_SECONDS = 1.0
STAGGER_FRACTION = 3  # workers leave spread over up to a third of the margin
CLOSE_LEAD = 1.0  # the stagger is at least this: closing takes a moment, and it must end before end - margin
HANDBACK_PAUSE = 1.0  # a draining worker waits this long before handing a chunk back, so chunks do not ping-pong

logger = logging.getLogger("hpcbridge.drain")

_state: dict[str, Any] = {"end": None, "margin": MINIMUM_MARGIN, "stagger": 0.0, "longest": 0.0,
                          "draining": False, "running": 0}


def job_end() -> float | None:
    """When the batch job ends (epoch seconds), from the job script's export; None when unknown."""
    value = os.environ.get("HPCBRIDGE_JOB_END", "")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def job_settings() -> dict[str, Any]:
    """Run on the scheduler: what its job exported for runs and the walltime.

    ``run_directory``: the root under which runs are saved (``""``: saving is off; None: not
    set); ``job_end`` (epoch seconds) and ``margin`` (seconds), None without a walltime.
    """
    margin = os.environ.get("HPCBRIDGE_LIFETIME_MARGIN")
    return {"run_directory": os.environ.get("HPCBRIDGE_RUN_DIRECTORY"), "job_end": job_end(),
            "margin": float(margin) if margin else None}


def leave_at() -> float | None:
    """The moment this worker stops taking chunks (epoch seconds), or None without a known end."""
    end = _state["end"]
    if end is None:
        return None
    margin = max(_state["margin"], MINIMUM_MARGIN, 3 * _state["longest"])
    return end - margin - _state["stagger"]


def check(expected_seconds: float) -> None:
    """Before a chunk starts: raise ``Reschedule`` when this worker cannot finish it in time."""
    limit = leave_at()
    if limit is None:
        return
    if _state["draining"] or time.time() + expected_seconds > limit:
        from distributed import Reschedule

        _state["draining"] = True
        time.sleep(HANDBACK_PAUSE)
        raise Reschedule()


def started() -> None:
    _state["running"] += 1


def record(seconds: float) -> None:
    """After a chunk: remember how long it took (the margin grows with the longest chunk)."""
    _state["running"] -= 1
    _state["longest"] = max(_state["longest"], seconds)


async def dask_setup(worker: Any) -> None:
    """``--preload hpcbridge.cluster.drain``: read the job's end, and leave before it."""
    end = job_end()
    if end is None:
        return
    _state["end"] = end
    try:
        _state["margin"] = max(MINIMUM_MARGIN, float(os.environ.get("HPCBRIDGE_LIFETIME_MARGIN", MINIMUM_MARGIN)))
    except ValueError:
        pass
    _state["stagger"] = random.uniform(CLOSE_LEAD, max(CLOSE_LEAD, _state["margin"] / STAGGER_FRACTION))
    worker.metrics[LEAVE_METRIC] = lambda _worker: leave_at()
    worker._hpcbridge_drain = asyncio.ensure_future(_leave_before_the_end(worker))


async def _leave_before_the_end(worker: Any) -> None:
    while True:
        limit, now = leave_at(), time.time()
        if limit is None or now < limit:
            # Wake at the leave time itself, not up to a poll later (a late wake-up ate into the margin).
            await asyncio.sleep(POLL_SECONDS if limit is None else min(POLL_SECONDS, limit - now))
            continue
        _state["draining"] = True
        if _state["running"] > 0 and now < _state["end"] - 5:
            await asyncio.sleep(POLL_SECONDS)
            continue  # finish the chunk in hand first
        remaining = _state["end"] - now
        logger.info("hpcbridge: the job ends in %.0f s; this worker leaves now", remaining)
        try:
            worker.log_event(EVENT_TOPIC, {"worker": worker.address, "job_end": _state["end"],
                                           "left": now, "margin": remaining})
            await asyncio.sleep(0.2)  # let the event reach the scheduler
            await worker.close_gracefully(restart=False, reason="hpcbridge-drain-before-walltime")
        except Exception as error:  # the scheduler may be gone already; the job ends anyway
            logger.info("hpcbridge: leaving: %s", error)
            await worker.close(nanny=True, reason="hpcbridge-drain-before-walltime")
        return
