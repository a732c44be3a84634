"""hpcbridge's broadcast to 32 workers over a real network: the Slurm test harness's nodes, TLS.

The issue's goal: broadcast to 32 workers over the network within 3x the loopback limit printed
beside it. ``benchmarks/broadcast.py`` can only emulate the network (every worker of one local
cluster says it is a machine of its own); here the cluster is a Slurm job on the test harness
(``tests/cluster/slurm-cluster``: nodes are network namespaces of this machine joined over ``ib0``
through a bridge; Slurm's own daemons, real ``sbatch``/``srun``), 8 single-thread workers per node,
and the client sends from outside the job, as from a login node, with hpcbridge's default TLS.

Measured with broadcast.py's functions, each figure named ``slurm_``: the shared broadcast (the
default: the workers of a machine are to map one copy there) and private copies (``shared=False``:
a tree over the machines, the workers of each copy theirs from its machine's copy), each the first
time and then the median of ``--repeats``; how many copies crossed the network (``_network_copies``:
a shared broadcast has no plan, so the workers of a node that ask before one of them holds it get
theirs over the network too, and each writes a machine copy of its own); the loopback limit
(the bytes times one copy per worker, over one plain TCP stream on 127.0.0.1) and the comm limit
(one copy per worker, times one TLS copy alone from a worker to one on another node), both
measured in the same run, and each broadcast's seconds over them.

The harness's nodes share one kernel and one PID namespace, so hpcbridge rightly sees one machine
and would map a single copy for all of them (one copy on the network, from the client). Each
worker therefore says its machine is its node's network namespace (``broadcast.own_machine``,
``per="node"``), as on nodes of their own; ``--one-machine`` measures what hpcbridge sees instead.
Needs root (the harness makes namespaces); brings the harness down at the end, also on failure.

    sudo .venv/bin/python benchmarks/broadcast_slurm.py
    sudo .venv/bin/python benchmarks/broadcast_slurm.py --megabytes 16 --nodes 2 --workers-per-node 4
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import broadcast
import cloudpickle
import numpy as np
from scale_slurm import HARNESS, harness_env

# The workers and the scheduler cannot import this folder's modules: they get broadcast.py's functions by value.
cloudpickle.register_pickle_by_value(broadcast)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=100, help="size of the NumPy array broadcast")
    parser.add_argument("--nodes", type=int, default=4, help="harness nodes")
    parser.add_argument("--workers-per-node", type=int, default=8, help="single-thread workers on each node")
    parser.add_argument("--repeats", type=int, default=3, help="broadcasts of each kind after the first; the median is printed")
    parser.add_argument("--one-machine", action="store_true",
                        help="leave the nodes one machine, as hpcbridge sees them here (one copy crosses the network)")
    options = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that `finally` brings the harness down

    from hpcbridge.client.bridge import connect
    from hpcbridge.job import submit as jobs
    from hpcbridge.job.spec import JobSpec

    data = np.random.default_rng(0).random(options.megabytes * 2**20 // 8)
    n_workers = options.nodes * options.workers_per_node
    started = time.perf_counter()
    folder = Path(tempfile.mkdtemp(prefix="hpcb-broadcast-", dir="/tmp"))
    folder.chmod(0o755)  # munged refuses a socket below a 0700 folder
    here, job, done = os.getcwd(), None, False
    try:
        up = subprocess.run([str(HARNESS), "up", "--dir", str(folder), "--nodes", str(options.nodes),
                             "--cpus", str(options.workers_per_node)], check=False, capture_output=True, text=True,
                            timeout=300)
        if up.returncode != 0:
            sys.exit(f"the Slurm harness did not start (logs in {folder}):\n{up.stderr}{up.stdout}")
        env = harness_env(Path(up.stdout.strip().splitlines()[-1]))
        os.environ.update(env)
        spec = JobSpec(scheduler="slurm", nodes=options.nodes, ntasks_per_node=options.workers_per_node,
                       cpus_per_task=1, interface=env["HPCB_SLURM_INTERFACE"], python=sys.executable,
                       walltime="30m", scheduler_file=str(folder / "{job_id}" / "scheduler.json"),
                       job_name="broadcast")
        os.chdir(folder)  # the job's output file (broadcast-<id>.out) goes where it is submitted from: not the clone
        job = jobs.submit(spec)
        with connect(job.scheduler_file, n_workers=n_workers, timeout=300, job=job) as bridge:
            print(f"slurm_start_seconds: {time.perf_counter() - started:.1f}", flush=True)
            measure(bridge, data, options)
        done = True
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one would stop the bringing down half way
        try:
            if job is not None and not job.status().finished:
                job.cancel()
        finally:  # the harness goes down even when Slurm does not answer
            os.chdir(here)
            down = subprocess.run([str(HARNESS), "down", "--dir", str(folder)], check=False, capture_output=True,
                                  text=True, timeout=120)
            if done and down.returncode == 0:
                shutil.rmtree(folder, ignore_errors=True)
            else:
                print(f"harness logs and the job's output kept in {folder}", file=sys.stderr)
    print(f"slurm_total_seconds: {time.perf_counter() - started:.1f}")


def measure(bridge, data: np.ndarray, options: argparse.Namespace) -> None:
    from hpcbridge.cluster import machine_copy

    client = bridge.client
    if not options.one_machine:
        client.run(broadcast.own_machine, True, "node")
    interval = client.run_on_scheduler(broadcast.amm_interval)
    print(f"slurm_nodes: {options.nodes}")
    print(f"slurm_workers: {bridge.n_workers}")
    print(f"slurm_machines: {len(set(client.run(machine_copy.machine).values()))}")
    print(f"slurm_megabytes: {data.nbytes / 2**20:.0f}")
    print(f"slurm_protocol: {client.scheduler.address.split('://')[0]}")
    print(f"slurm_amm_interval_seconds: {interval:g}", flush=True)
    seconds = {}
    for label, shared in (("slurm_shared", True), ("slurm_private", False)):
        broadcast.first_broadcast(bridge, data, label, shared=shared)
        seconds[label], one_copy = broadcast.broadcast_once(bridge, data, interval, label, shared=shared,
                                                            repeats=options.repeats)
        sys.stdout.flush()
    broadcast.print_limits(data.nbytes, bridge.n_workers, one_copy, seconds, prefix="slurm_")


if __name__ == "__main__":
    main()
