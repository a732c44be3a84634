"""The program every MPI rank runs in ``mpi`` mode: a Dask cluster as one MPI job, via dask-mpi.

Rank 0 runs the scheduler and writes the scheduler file; with ``--client-script``, rank 1 runs
that script (as ``__main__``, with ``--client-arg`` values as its arguments) and the cluster
ends when it returns; every other rank is a worker with a pinned thread count. Without a client
script the cluster runs until an outside client shuts it down.

Three things dask-mpi leaves to its caller are done here: the world size is checked first, with
the minimum stated; a client script that raises still closes the cluster and makes the job
fail, instead of leaving every rank waiting until the walltime; and when the script ends, the
workers leave before dask-mpi closes the scheduler (:mod:`hpcbridge.cluster.ending`), so a
normal end logs no traceback (a worker's heartbeat to the closed scheduler timed out, now and
then, and logged one).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import runpy
import sys
import threading
import traceback


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Read the options the dask-mpi job template passes."""
    parser = argparse.ArgumentParser(prog="python -m hpcbridge.cluster.mpi_job", description=__doc__.splitlines()[0])
    parser.add_argument("--scheduler-file", required=True)
    parser.add_argument("--nthreads", type=int, required=True)
    parser.add_argument("--memory-limit", default="auto")
    parser.add_argument("--interface", default=None)
    parser.add_argument("--scheduler-interface", default=None)
    parser.add_argument("--protocol", default="tcp")
    parser.add_argument("--dashboard-address", default="127.0.0.1:0",
                        help="where the scheduler's dashboard listens (each worker's pages: the same host, any port)")
    parser.add_argument("--lifetime", type=int, default=None, help="seconds before workers retire")
    parser.add_argument("--drain", action="store_true",
                        help="workers leave before the job's end (HPCBRIDGE_JOB_END), handing back what "
                        "they cannot finish (hpcbridge.cluster.drain)")
    parser.add_argument("--idle-timeout", type=int, default=0,
                        help="seconds without a client and a task before the scheduler ends the cluster (0: never)")
    parser.add_argument("--client-script", default=None)
    parser.add_argument("--client-arg", action="append", default=[])
    parser.add_argument("--local-directory", default=None,
                        help="the workers' scratch and spill folder  [default: node_local_directory()]")
    return parser.parse_args(argv)


def node_local_directory() -> str:
    """This node's own disk for the workers' scratch and spill: $TMPDIR, else $SLURM_TMPDIR, else /tmp.

    Read on each rank's node when it starts. dask-mpi's own default is the working directory
    (``dask-scratch-space/`` there, usually on the shared file system), never wanted here.
    """
    return os.environ.get("TMPDIR") or os.environ.get("SLURM_TMPDIR") or "/tmp"


def minimum_world_size(with_client: bool) -> int:
    """Ranks needed: the scheduler, the client if any, and at least one worker."""
    return 3 if with_client else 2


def main(argv: list[str] | None = None) -> int:
    """Run this rank's part of the cluster; return the process exit status."""
    options = parse_arguments(sys.argv[1:] if argv is None else argv)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    needed = minimum_world_size(options.client_script is not None)
    if comm.Get_size() < needed:
        if comm.Get_rank() == 0:
            print(f"hpcbridge: mpi mode needs at least {needed} MPI ranks (scheduler, "
                  f"{'client, ' if options.client_script else ''}one worker); this job has {comm.Get_size()}",
                  file=sys.stderr)
        return 1

    from dask_mpi import execute

    logging.getLogger("distributed.batched").setLevel(logging.WARNING)
    outcome = _ClientOutcome()
    worker_options: dict = {"lifetime": f"{options.lifetime}s", "lifetime_stagger": "30s"} if options.lifetime else {}
    if options.drain:
        worker_options["preload"] = ["hpcbridge.cluster.drain"]
    # dask-mpi's workers would serve their counts on their listening interface: on the dashboard's host
    # instead; they serve no pages. The scheduler's dashboard lets in its owner only (the job's token).
    worker_options.update(dashboard=False, dashboard_address=options.dashboard_address.rpartition(":")[0] + ":0")
    import dask.config

    preloads = ["hpcbridge.cluster.dashboard_gate"]
    if options.drain and not options.client_script:
        preloads.append("hpcbridge.cluster.drained_end")  # the allocation is not held idle until the walltime
    if options.idle_timeout > 0:
        from hpcbridge.cluster import idle_end

        os.environ[idle_end.TIMEOUT_VARIABLE] = str(options.idle_timeout)
        preloads.append("hpcbridge.cluster.idle_end")
    dask.config.set({"distributed.scheduler.preload": preloads})
    if options.scheduler_interface and comm.Get_rank() == 0:
        interface = options.scheduler_interface
    else:
        interface = options.interface
    execute(
        client_function=outcome.run if options.client_script else None,
        client_args=(options.client_script, options.client_arg),
        scheduler_file=options.scheduler_file,
        scheduler_port=0,
        dashboard_address=options.dashboard_address,
        interface=interface,
        protocol=options.protocol,
        nthreads=options.nthreads,
        memory_limit=options.memory_limit,
        local_directory=options.local_directory or node_local_directory(),
        worker_options=worker_options,
        comm=comm,
    )
    if options.client_script and comm.Get_rank() == 1:
        outcome.finished.wait()
        return outcome.status
    return 0


class _ClientOutcome:
    """Runs the client script and remembers how it ended, whatever it raised."""

    def __init__(self) -> None:
        self.finished = threading.Event()
        self.status = 1

    def run(self, script: str, arguments: list[str]) -> None:
        sys.argv = [script, *arguments]
        try:
            runpy.run_path(script, run_name="__main__")
            self.status = 0
        except SystemExit as stop:
            self.status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:
            traceback.print_exc()
            print(f"hpcbridge: the client script {script} failed; closing the cluster", file=sys.stderr)
        finally:
            close_workers_before_the_scheduler()
            self.finished.set()


def close_workers_before_the_scheduler() -> None:
    """Have the workers leave first; dask-mpi then closes the scheduler alone (its address is in Dask's config).

    A client the script left open is closed first: it would try to reconnect to the closed
    scheduler and log an error. Nothing here may keep the cluster from ending: failures are ignored.
    """
    from distributed import Client

    from hpcbridge.cluster.ending import WAIT_SECONDS, close_workers_first

    for left_open in list(Client._instances):
        with contextlib.suppress(Exception):
            left_open.close(timeout=10)
    with contextlib.suppress(Exception), Client(timeout=30) as client:
        client.run_on_scheduler(close_workers_first, callback_timeout=WAIT_SECONDS + 10)  # Client.sync's bound


if __name__ == "__main__":
    sys.exit(main())
