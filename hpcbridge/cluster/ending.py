"""Scheduler side: end a cluster on purpose in an order whose log reads clean.

``client.shutdown()`` closes the scheduler first; it tells each worker to close on its way
out, and the workers, still holding results and still sending heartbeats, log what a failure
would: "Batched Comm Closed" with a ``CommClosedError`` traceback, "Failed to communicate with
scheduler during heartbeat" (an ERROR), and "lose already computed task(s)" warnings as each
one is removed. A COMPLETED job's log then looked like a crash.

:func:`close_workers_first` runs on the scheduler before it is shut down: every result any
client (or a published dataset) still wants is released, then every worker is asked to close
and the scheduler waits until each has left by itself, so the scheduler closes last, alone.
Every finished chunk of a run is on disk already (:mod:`hpcbridge.rundir`); releasing the
results in memory loses nothing that the cluster's end would not lose anyway.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

STIMULUS = "hpcbridge-shutdown"
WAIT_SECONDS = 20.0  # at most this long for the workers to leave; the scheduler closes after it regardless
POLL_SECONDS = 0.05


async def close_workers_first(dask_scheduler: Any, timeout: float = WAIT_SECONDS) -> int:
    """Release every wanted result, ask every worker to close, and wait (bounded) until they have left.

    Returns how many of them are still registered after ``timeout`` (0 when all left in time).
    """
    scheduler = dask_scheduler
    for client, state in list(scheduler.clients.items()):
        keys = [task.key for task in state.wants_what]
        if keys:
            scheduler.client_releases_keys(keys=keys, client=client, stimulus_id=STIMULUS)
    leaving = set(scheduler.workers)  # only these: an adaptive cluster may start another meanwhile
    for address in leaving:
        scheduler.close_worker(address)
    deadline = time.monotonic() + timeout
    while leaving & set(scheduler.workers) and time.monotonic() < deadline:
        await asyncio.sleep(POLL_SECONDS)
    return len(leaving & set(scheduler.workers))
