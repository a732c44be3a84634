"""map at scale through a real Slurm: the harness's three nodes, workers of many threads, TLS.

The same comparison as ``benchmarks/scale.py`` (``bridge.map`` against one contiguous chunk per
thread in one ``client.map``, even and heavy-tailed waiting items), but the cluster is a Slurm job
on the test harness (``tests/cluster/slurm-cluster``: nodes are network namespaces of this
machine, joined over ``ib0``; Slurm's own daemons, real ``sbatch``/``srun``), with hpcbridge's
default TLS: it shows that the route through the batch system and the encrypted comms keeps the
ratio. Needs root (the harness makes namespaces); brings the harness down at the end.

    sudo .venv/bin/python benchmarks/scale_slurm.py --nodes 3 --threads 64
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import scale

HARNESS = Path(__file__).resolve().parent.parent / "tests" / "cluster" / "slurm-cluster"


def wait(seconds: float) -> float:  # defined here, so that the workers get it by value (this is __main__)
    time.sleep(seconds)
    return seconds


def wait_all(chunk: list[float]) -> list[float]:
    return [wait(seconds) for seconds in chunk]


def harness_env(env_file: Path) -> dict[str, str]:
    words = (shlex.split(line) for line in env_file.read_text().splitlines())
    return dict(w[1].split("=", 1) for w in words if len(w) == 2 and w[0] == "export")


def main(argv: list[str] | None = None) -> None:
    parser = scale.options_parser(__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="harness nodes, one worker each")
    parser.add_argument("--threads", type=int, default=64, help="threads per worker (the nodes declare as many CPUs)")
    options = parser.parse_args(argv)
    import os

    from hpcbridge.client.bridge import connect
    from hpcbridge.job import submit as jobs
    from hpcbridge.job.spec import JobSpec

    folder = Path(tempfile.mkdtemp(prefix="hpcb-scale-", dir="/tmp"))
    folder.chmod(0o755)  # munged refuses a socket below a 0700 folder
    up = subprocess.run([str(HARNESS), "up", "--dir", str(folder), "--nodes", str(options.nodes),
                         "--cpus", str(options.threads)], capture_output=True, text=True, timeout=300)
    if up.returncode != 0:
        sys.exit(f"the Slurm harness did not start (logs in {folder}):\n{up.stderr}{up.stdout}")
    job = None
    try:
        env = harness_env(Path(up.stdout.strip().splitlines()[-1]))
        os.environ.update(env)
        spec = JobSpec(scheduler="slurm", nodes=options.nodes, ntasks_per_node=1, cpus_per_task=options.threads,
                       interface=env["HPCB_SLURM_INTERFACE"], python=sys.executable, walltime="20m",
                       scheduler_file=str(folder / "{job_id}" / "scheduler.json"), job_name="scale")
        os.chdir(folder)  # the job's output file (scale-<id>.out) goes where it is submitted from: not the clone
        job = jobs.submit(spec)
        with connect(job.scheduler_file, n_workers=options.nodes, timeout=180, job=job) as bridge:
            threads = bridge.total_threads
            prefix = f"slurm_t{threads}"
            print(f"{prefix}_threads: {threads}")
            print(f"{prefix}_protocol: {bridge.client.scheduler.address.split('://')[0]}")
            bridge.gather(bridge.map(wait, [0.0] * threads, progress=False), progress=False)  # imports, workers warm
            scale.compare(bridge, prefix, threads, options, fn=wait, chunk_fn=wait_all)
    finally:
        if job is not None and not job.status().finished:
            job.cancel()
        subprocess.run([str(HARNESS), "down", "--dir", str(folder)], capture_output=True, timeout=120)


if __name__ == "__main__":
    main()
