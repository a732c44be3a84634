"""Adaptive mode on the real Slurm: dask-jobqueue submits and cancels batch jobs as work comes and goes."""

from __future__ import annotations

import sys

import pytest
from distributed import Client

from hpcbridge.job.adaptive import jobqueue_cluster, jobqueue_options
from hpcbridge.job.spec import JobSpec, SpecError
from hpcbridge.workloads.primes import split_range, sum_prime_factors
from tests.conftest import wait_for


def _our_jobs(cluster, name: str) -> list[str]:
    return [line for line in cluster.run("squeue", "-h", "-o", "%j %T").stdout.splitlines() if line.startswith(name)]


def test_adapt_adds_jobs_for_work_and_removes_them_when_idle(slurm_cluster, tmp_path) -> None:
    spec = JobSpec(scheduler="slurm", ntasks_per_node=2, cpus_per_task=1, mem_per_cpu="800M", walltime="10m",
                   interface=slurm_cluster.interface, python=sys.executable, job_name="hpcb-adapt", protocol="tcp")
    with jobqueue_cluster(spec, log_directory=str(tmp_path)) as cluster:
        script = cluster.job_script()
        assert "#SBATCH --cpus-per-task=2\n#SBATCH --mem=2G\n" in script  # dask-jobqueue rounds up to GB
        assert "--nthreads 1 --memory-limit 800.00MiB --nworkers 2" in script
        cluster.adapt(minimum_jobs=0, maximum_jobs=2, interval="500ms", wait_count=2, min_job_age="20s")
        with Client(cluster) as client:
            total = sum(client.gather(client.map(sum_prime_factors, split_range(2, 10_000, 8))))
            assert total == 10218029
            assert _our_jobs(slurm_cluster, "hpcb-adapt")
            del total
        assert wait_for(lambda: not _our_jobs(slurm_cluster, "hpcb-adapt"), timeout=90)
    # Each job leaves its own log: distributed's Adaptive alone cancelled jobs still starting
    # as the target swung (90 jobs for this map on a loaded machine, and a KilledWorker).
    submitted = sorted(path.name for path in tmp_path.glob("hpcb-adapt-*.out"))
    assert 1 <= len(submitted) <= 4, submitted


def test_adaptive_mode_needs_single_node_jobs_and_a_memory_size() -> None:
    with pytest.raises(SpecError, match="nodes"):
        jobqueue_options(JobSpec(scheduler="slurm", nodes=2, mem="1G", protocol="tcp"))
    with pytest.raises(SpecError) as caught:
        jobqueue_options(JobSpec(scheduler="slurm", protocol="tcp"))
    assert caught.value.field == "mem"
    with pytest.raises(SpecError, match="tcp in adaptive mode with the scheduler in your process") as caught:
        jobqueue_options(JobSpec(scheduler="slurm", mem="1G"))  # tls, the default elsewhere
    assert caught.value.field == "protocol"
    lsf = jobqueue_options(JobSpec(scheduler="lsf", ntasks_per_node=2, cpus_per_task=4, mem_per_cpu="1G",
                                   walltime="90m", account="p1", protocol="tcp"))
    assert (lsf["ncpus"], lsf["processes"], lsf["walltime"], lsf["project"]) == (8, 2, "01:30", "p1")
