"""How long a cluster takes to start and be attached, by size: a local job of N one-thread workers.

For each size: seconds from submitting the job until its scheduler file appears, and until
``connect(n_workers=N)`` returns (every worker joined), then a map of one item per worker. All
processes share this machine's cores, so at 32-64 workers this is mostly Python's start-up
(imports) on 2 cores: a lower bound for what a batch system adds.

    .venv/bin/python benchmarks/start.py --sizes 8,32,64
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.job.spec import JobSpec
from hpcbridge.private_files import state_home


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="8,32,64", help="worker counts, comma-separated")
    options = parser.parse_args(argv)
    for workers in (int(size) for size in options.sizes.split(",")):
        spec = JobSpec(scheduler="local", ntasks_per_node=workers, cpus_per_task=1, python=sys.executable,
                       mem_per_cpu="200M", job_name="hpcbridge-start",
                       scheduler_file=str(state_home("local") / "{job_id}" / "scheduler.json"))
        started = time.perf_counter()
        job = jobs.submit(spec)
        try:
            while not os.path.exists(job.scheduler_file):
                time.sleep(0.05)
            file_seconds = time.perf_counter() - started
            with connect(job.scheduler_file, n_workers=workers, timeout=600, job=job) as bridge:
                joined = time.perf_counter() - started
                run = bridge.map(abs, range(workers), chunk_size=1, save=False, progress=False)
                bridge.gather(run, progress=False)
                mapped = time.perf_counter() - started
                bridge.shutdown()
        finally:
            if not job.status().finished:
                job.cancel()
            jobs.forget(job)
        print(f"w{workers}_scheduler_file_seconds: {file_seconds:.2f}")
        print(f"w{workers}_connect_seconds: {joined:.2f}")
        print(f"w{workers}_first_map_seconds: {mapped:.2f}", flush=True)


if __name__ == "__main__":
    main()
