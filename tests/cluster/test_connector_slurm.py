"""The connector on a real Slurm: a broadcast that sticks (also for a worker that joins later as a
job step), and a run whose results outlive a killed client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from hpcbridge.client.bridge import connect
from hpcbridge.cluster import broadcasts as broadcast
from hpcbridge.cluster import chunks
from hpcbridge.job import submit as jobs
from hpcbridge.job.spec import JobSpec
from tests.conftest import wait_for, worker_tls_env
from tests.scheduler_probes import amm_interval, peak_rss_bytes

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below run on the cluster

MB = 2**20


def weighted_sum(item: float, weights: np.ndarray) -> float:
    return float(weights[:3].sum() * item)


@pytest.fixture
def submit(slurm_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Submit Slurm jobs that run this interpreter; cancel each one that still runs at the end."""
    monkeypatch.chdir(tmp_path)
    submitted: list[jobs.SubmittedJob] = []

    def make(**values) -> jobs.SubmittedJob:
        job = jobs.submit(JobSpec(scheduler="slurm", interface=slurm_cluster.interface, python=sys.executable,
                                  scheduler_file=str(tmp_path / "{job_id}" / "scheduler.json"), walltime="10m",
                                  **values))
        submitted.append(job)
        return job

    yield make
    for job in submitted:
        if not job.status().finished:
            job.cancel()
        assert wait_for(lambda: job.status().finished, timeout=60), f"job {job.job_id} did not end"


def test_broadcast_sticks_on_slurm_workers_and_reaches_a_late_job_step(slurm_cluster, submit) -> None:
    job = submit(ntasks_per_node=2, cpus_per_task=1, mem_per_cpu="700M", job_name="broadcast")
    with connect(job.scheduler_file, n_workers=2, timeout=120) as bridge:
        interval = bridge.client.run_on_scheduler(amm_interval)
        assert interval is not None
        scheduler_peak = bridge.client.run_on_scheduler(peak_rss_bytes)
        data = np.random.default_rng(2).random(12_500_000)  # 100 MB
        handle = bridge.broadcast(data)
        assert (handle.nbytes, handle.n_workers) == (data.nbytes, 2)
        time.sleep(2 * interval + 1)
        results = bridge.gather(bridge.map(weighted_sum, [1.0, 2.0, 3.0, 4.0], args=handle, progress=False))
        assert results == [weighted_sum(i, data) for i in (1.0, 2.0, 3.0, 4.0)]
        copies = [held[handle.name] for held in bridge.client.run(broadcast.worker_stats).values()]
        assert sorted(c["fetches"] for c in copies) == [0, 1] and all(c["held"] for c in copies)
        grown = bridge.client.run_on_scheduler(peak_rss_bytes) - scheduler_peak
        assert grown < 40 * MB, f"the scheduler's peak memory grew by {grown / MB:.0f} MB"

        before = set(bridge.client.scheduler_info(n_workers=-1)["workers"])
        step = subprocess.Popen(
            ["srun", f"--jobid={job.job_id}", "--overlap", "--ntasks=1", "--cpus-per-task=1",
             sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", job.scheduler_file,
             "--nthreads", "1", "--interface", slurm_cluster.interface, "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **worker_tls_env(job.scheduler_file)})
        try:
            assert wait_for(lambda: bridge.n_workers == 3 or step.poll() is not None, timeout=60), "no late worker"
            assert step.poll() is None, step.stderr.read()
            (late,) = set(bridge.client.scheduler_info(n_workers=-1)["workers"]) - before
            copy = bridge.client.run(broadcast.worker_stats, workers=[late])[late][handle.name]
            assert copy["held"] and copy["fetches"] == 1 and copy["source"] in before
            value = bridge.client.submit(broadcast.value, handle.name, workers=[late], pure=False).result()
            np.testing.assert_array_equal(value, data)
        finally:
            step.terminate()  # srun passes SIGTERM on to the worker, which leaves the cluster cleanly
            try:
                step.wait(timeout=30)
            except subprocess.TimeoutExpired:
                step.kill()
                step.wait()
        bridge.release(handle)
        bridge.shutdown()


CLIENT = textwrap.dedent("""
    import sys
    from hpcbridge import connect
    bridge = connect(sys.argv[1], n_workers=2, timeout=60)
    run = bridge.map(sys.argv[2] + ":slow_cube", range(150), name="slurm-survivor", progress=False)
    print(run.name, flush=True)
    sys.stdin.read()
""")


def test_a_killed_clients_run_is_collected_from_a_new_process_without_recomputing(slurm_cluster, submit,
                                                                                  tmp_path: Path) -> None:
    job = submit(ntasks_per_node=2, cpus_per_task=1, mem_per_cpu="300M", job_name="survive")
    (tmp_path / "client.py").write_text(CLIENT)
    (tmp_path / "user_functions.py").write_text("import time\n\ndef slow_cube(x):\n    time.sleep(0.02)\n"
                                                "    return x ** 3\n")
    client = subprocess.Popen([sys.executable, str(tmp_path / "client.py"), job.scheduler_file,
                               str(tmp_path / "user_functions.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "slurm-survivor"
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    with connect(job.scheduler_file, n_workers=2, timeout=60) as bridge:
        assert bridge.results("slurm-survivor", timeout=120, progress=False) == [x**3 for x in range(150)]
        counts = bridge.client.run(chunks.executed_items).values()
        assert sum(c.get("slurm-survivor", 0) for c in counts) == 150
        bridge.shutdown()
