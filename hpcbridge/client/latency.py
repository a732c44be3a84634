"""Shorter message-batching intervals on the streams of a cluster a bridge is attached to.

distributed batches the small messages of its long-lived streams: a client writes to the
scheduler at most every 10 ms, the scheduler to each worker every 5 ms and to each client every
2 ms. After a pause, the first message goes at once, but one that follows within the interval
waits for it, so a task submitted just after another message pays up to 10 + 5 + 2 ms before its
result is known: a two-item chunk took 14-20 ms from submit to done here, 4-6 ms with 1 ms
intervals. hpcbridge sends few, large chunks, so batching saves it almost nothing while its waits
are most of a short run's cost (a 200,000-item map: 56 ms, 45 ms with 1 ms intervals).

Set from the client (:func:`quicken`, called for every bridge) on the client's own stream and,
through ``run_on_scheduler``, on the scheduler's streams, including those of workers that join
later (a scheduler plugin). A scheduler that cannot import hpcbridge keeps distributed's
intervals: nothing fails. The cost: at most 1,000 writes a second per stream instead of 100-500,
only while messages flow.
"""

from __future__ import annotations

from typing import Any

INTERVAL_SECONDS = 0.001
PLUGIN_NAME = "hpcbridge-quick-streams"


def quicken(client: Any) -> bool:
    """Shorten the batching interval of ``client``'s stream and of its scheduler's; True if the scheduler took it."""
    stream = getattr(client, "scheduler_comm", None)
    if stream is not None and hasattr(stream, "interval"):
        stream.interval = min(stream.interval, INTERVAL_SECONDS)
    try:
        return bool(client.run_on_scheduler(quicken_scheduler))
    except Exception:  # noqa: BLE001 -- an older or hpcbridge-less scheduler: its intervals stay
        return False


def quicken_scheduler(dask_scheduler: Any = None) -> bool:
    """Scheduler side: shorten the intervals of every worker and client stream, now and for new workers."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    class QuickStreams(SchedulerPlugin):
        name = PLUGIN_NAME

        def add_worker(self, scheduler: Any = None, worker: str | None = None, **kwargs: Any) -> None:
            _shorten(scheduler.stream_comms.get(worker))

    for stream in [*dask_scheduler.stream_comms.values(), *dask_scheduler.client_comms.values()]:
        _shorten(stream)
    if PLUGIN_NAME not in dask_scheduler.plugins:
        dask_scheduler.add_plugin(QuickStreams())
    return True


def _shorten(stream: Any) -> None:
    if stream is not None and getattr(stream, "interval", 0) > INTERVAL_SECONDS:
        stream.interval = INTERVAL_SECONDS
