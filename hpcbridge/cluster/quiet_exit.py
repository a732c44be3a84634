"""Worker side (``--preload hpcbridge.cluster.quiet_exit``): a worker that closes as asked says nothing false.

In a worker process, distributed's nanny leaves a thread waiting on the queue its nanny sends a
stop through. When the worker closes by itself (a planned end: the scheduler asks every worker
to close, :mod:`hpcbridge.cluster.ending`), the process can close that queue while the thread
still reads it; the thread then logs "Worker process died unexpectedly" with an ERROR and a
``TypeError`` traceback, although nothing died unexpectedly: a race inside distributed (seen in
one of three runs of the test suite here), which made a COMPLETED job's log read like a crash.

This preload drops that one record, and only while its worker is already closing or closed;
the same words at any other time (a nanny that really went away) still reach the log.
"""

from __future__ import annotations

import logging
from typing import Any

NANNY_LOGGER = "distributed.nanny"
FALSE_ALARM = "Worker process died unexpectedly"
_CLOSING = {"closing", "closing_gracefully", "closed", "failed"}


class ClosingWorkerFilter(logging.Filter):
    """Drop the stop queue's "died unexpectedly" record of a worker that is closing as asked."""

    def __init__(self, worker: Any) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() != FALSE_ALARM:
            return True
        status = getattr(getattr(self.worker, "status", None), "name", None)
        return status not in _CLOSING


def dask_setup(worker: Any) -> None:
    """Install the filter on the nanny's logger of this worker process."""
    logging.getLogger(NANNY_LOGGER).addFilter(ClosingWorkerFilter(worker))
