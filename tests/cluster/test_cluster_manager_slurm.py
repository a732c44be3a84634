"""``hpcbridge.Cluster`` on the real Slurm of the harness (one node of 4 CPUs, one harness for the module).

A cluster job of one worker; ``scale`` to two worker jobs that join it and back to one (the most
recent one cancelled, its worker retired first); ``Client(cluster)`` computes over TLS with the
job's certificates; ``close()`` leaves nothing in the queue.
"""

from __future__ import annotations

import os
import sys

from distributed import Client

import hpcbridge
from tests.conftest import wait_for


def _queued(cluster) -> list[str]:
    return cluster.run("squeue", "-h", "-o", "%i").stdout.split()


def test_a_cluster_on_slurm_scales_by_worker_jobs_and_close_empties_the_queue(
        slurm_cluster, batch_jobs, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # sbatch writes the jobs' output where it runs

    def job_of_worker(item: int) -> str:
        """The Slurm job of the worker that ran ``item`` (it sleeps, so every worker gets items); defined
        here so that it travels by value (the workers cannot import this test module)."""
        import time

        time.sleep(0.2)
        return os.environ.get("SLURM_JOB_ID", "")

    cluster = hpcbridge.Cluster(scheduler="slurm", ntasks_per_node=1, mem_per_cpu="300M", walltime="10m",
                                interface=slurm_cluster.interface, python=sys.executable,
                                scheduler_file=str(tmp_path / "{job_id}" / "scheduler.json"),
                                job_name="cluster-object", timeout=120, quiet=True)
    try:
        batch_jobs.append(cluster.job)
        assert cluster.scheduler_address.startswith("tls://")
        cluster.scale(3)
        batch_jobs.extend(cluster.worker_jobs)
        assert len(cluster.worker_jobs) == 2
        assert set(_queued(slurm_cluster)) == {cluster.job.job_id, *(job.job_id for job in cluster.worker_jobs)}
        with Client(cluster) as client:
            client.wait_for_workers(3, timeout=120)
            ran = client.gather(client.map(job_of_worker, range(30)))
            assert set(ran) == {cluster.job.job_id, *(job.job_id for job in cluster.worker_jobs)}, ran

            first, second = cluster.worker_jobs
            cluster.scale(2)
            assert cluster.worker_jobs == [first]
            assert wait_for(lambda: second.job_id not in _queued(slurm_cluster), timeout=60), _queued(slurm_cluster)
            assert wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, timeout=30)
            assert set(client.gather(client.map(job_of_worker, range(10), pure=False))) <= \
                {cluster.job.job_id, first.job_id}
    finally:
        cluster.close()
    assert wait_for(lambda: not _queued(slurm_cluster), timeout=60), _queued(slurm_cluster)
