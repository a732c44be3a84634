"""Functions the tests run on a Dask scheduler (``client.run_on_scheduler``).

They are pickled by value, so the scheduler needs no copy of the tests.
"""

from __future__ import annotations

import resource
import sys

import cloudpickle

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def peak_rss_bytes() -> int:
    """The calling process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def amm_interval(dask_scheduler) -> float | None:
    """The Active Memory Manager's interval when it runs on this scheduler, else None."""
    amm = dask_scheduler.extensions.get("amm")
    return amm.interval if amm is not None and amm.running else None


def task_and_client_counts(dask_scheduler) -> tuple[int, int]:
    """How many tasks the scheduler holds and how many clients are connected to it."""
    return len(dask_scheduler.tasks), len(dask_scheduler.clients)
