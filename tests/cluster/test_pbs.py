"""PBS scripts through Slurm's Torque wrappers: the real ``qsub``, ``qstat`` and ``qdel``.

The wrappers (Debian's slurm-wlm-torque) run PBS scripts as Slurm jobs: ``#PBS`` directives in
Torque's ``nodes=...:ppn=...`` form are honoured, PBS_* variables come from Slurm's spank_pbs
plugin, and the job's node file from Slurm's generate_pbs_nodefile. Workers start with Open
MPI's mpiexec inside the allocation, as on a PBS cluster.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpcbridge.backends import JobNotFound, get_backend
from hpcbridge.client.attach import wait_for_scheduler_file
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from tests.conftest import CLIENT_SCRIPT, wait_for


def test_pbs_scheduler_file_job_through_qsub(slurm_cluster, batch_spec, batch_jobs) -> None:
    job = jobs.submit(batch_spec(slurm_cluster, "pbs", pbs_flavor="torque", ntasks_per_node=2, mem_per_cpu="300M",
                                 job_name="pbs-dask"))
    batch_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=120) as bridge:
        assert job.status().state == "RUNNING"
        workers = bridge.client.scheduler_info(n_workers=-1)["workers"].values()
        assert {w["memory_limit"] for w in workers} == {262 * 2**20}  # (600 MiB less 1/8 for the scheduler) / 2
        assert bridge.gather(bridge.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
        bridge.shutdown()
    assert wait_for(lambda: job.status().finished, timeout=60)
    status = job.status()
    assert status.state == "COMPLETED"
    log = Path(status.log).read_text()
    assert "hpcbridge: the scheduler exited (status 0)" in log
    squeue = slurm_cluster.run("squeue", "-h", "-o", "%j").stdout
    assert "pbs-dask" not in squeue


def test_pbs_dask_mpi_job_with_mpiexec_inside_the_allocation(slurm_cluster, batch_spec, batch_jobs, tmp_path) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    report = tmp_path / "report.json"
    job = jobs.submit(batch_spec(slurm_cluster, "pbs", pbs_flavor="torque", mode="mpi", ntasks_per_node=4,
                                 mem_per_cpu="700M", client_script=str(script), client_args=(str(report),)))
    batch_jobs.append(job)
    assert wait_for(lambda: job.status().finished, timeout=120), job.status()
    assert job.status().state == "COMPLETED"
    assert json.loads(report.read_text())["total"] == 10218029
    assert json.loads(report.read_text())["workers"] == 2


def test_qdel_cancels_and_unknown_jobs_are_reported(slurm_cluster, batch_spec, batch_jobs) -> None:
    job = jobs.submit(batch_spec(slurm_cluster, "pbs", pbs_flavor="torque"))
    batch_jobs.append(job)
    wait_for_scheduler_file(job.scheduler_file, timeout=60)
    job.cancel()
    assert wait_for(lambda: job.status().finished, timeout=60)
    # The wrappers' qstat reports a job that Slurm is still completing (CG) as done already.
    assert wait_for(lambda: slurm_cluster.run("squeue", "-h", "-j", job.job_id).stdout.strip() == "", timeout=60)
    with pytest.raises(JobNotFound):
        get_backend("pbs").status("99999")
