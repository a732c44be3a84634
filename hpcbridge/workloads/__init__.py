"""The workloads users bring, as worker-side kernels: prime factors, Mandelbrot, FE, Monte Carlo.

Each module holds functions that run on the Dask workers (so they must be importable there, which
is why they live in the package and not in the example scripts) and a driver that spreads them
over a :class:`~hpcbridge.client.bridge.Bridge`. Numba and SciPy are imported inside the functions that
need them: ``import hpcbridge`` works without the ``examples`` extra.

:func:`open_cluster` and :func:`add_cluster_options` are the part every example and benchmark
shares: run on a fresh local cluster (:func:`hpcbridge.local_cluster.local_cluster`, started the way a batch job starts), or attach
to a running cluster through its scheduler file.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hpcbridge.client.bridge import Bridge, connect


def add_cluster_options(parser: argparse.ArgumentParser, workers: int = 2) -> None:
    """Add ``--scheduler-file``, ``--workers`` and ``--timeout`` to a command line."""
    group = parser.add_argument_group("cluster")
    group.add_argument("--scheduler-file", metavar="F",
                       help="attach to the running cluster that wrote F (default: start a local cluster "
                            "for this run and end it afterwards)")
    group.add_argument("--workers", type=int, default=workers,
                       help=f"workers to start locally, or to wait for with --scheduler-file (default {workers})")
    group.add_argument("--timeout", type=float, default=120.0,
                       help="seconds to wait for the cluster and its workers (default 120)")


@contextmanager
def open_cluster(scheduler_file: str | os.PathLike[str] | None, workers: int, timeout: float = 120.0,
                 say: Callable[[str], None] = print, job_name: str = "hpcbridge-example") -> Iterator[Bridge]:
    """Yield a bridge to the cluster behind ``scheduler_file``, or to a local cluster started for it.

    A cluster attached to is left running (only this client detaches); a local cluster started
    here is shut down, and its job cancelled if it outlives the shutdown.
    """
    if scheduler_file is not None:
        with connect(scheduler_file, n_workers=workers, timeout=timeout) as bridge:
            say(f"attached to {bridge.client.scheduler.address} through {scheduler_file}")
            yield bridge
        return
    from hpcbridge.local_cluster import local_cluster

    with local_cluster(workers, timeout=timeout, say=say, job_name=job_name) as (_job, bridge):
        yield bridge
