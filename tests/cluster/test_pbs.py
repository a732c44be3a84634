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


@pytest.mark.parametrize("scheduler", ["slurm", "pbs"])
def test_many_jobs_are_asked_about_in_one_question(slurm_cluster, batch_jobs, monkeypatch, tmp_path,
                                                   scheduler) -> None:
    """What the adaptive scheduler asks at every decision (issue 25, goal 6): one squeue / qstat for all
    the jobs still queued, and a question of its own only for a job that ended. The commands run for real;
    a wrapper around run_command counts them."""
    from hpcbridge.backends import base
    from hpcbridge.backends import pbs as pbs_backend
    from hpcbridge.backends import slurm as slurm_backend
    from hpcbridge.job.submit import SubmittedJob

    monkeypatch.chdir(tmp_path)
    backend = get_backend(scheduler)
    quick = backend.submit("#!/bin/bash\ntrue\n")
    sleepers = [backend.submit("#!/bin/bash\nsleep 120\n") for _ in range(3)]
    batch_jobs.extend(SubmittedJob(job_id, scheduler, None) for job_id in [quick, *sleepers])
    assert wait_for(lambda: backend.status(quick).finished, timeout=60)
    asked: list[list[str]] = []

    def counted(command, *args, **kwargs):
        asked.append(list(command))
        return base.run_command(command, *args, **kwargs)

    monkeypatch.setattr(slurm_backend if scheduler == "slurm" else pbs_backend, "run_command", counted)
    found = base.statuses(backend, [quick, *sleepers])
    def names(command: list[str], job_id: str) -> bool:
        return any(job_id in part.split(",") for part in command)

    lists = [command for command in asked if all(names(command, job_id) for job_id in sleepers)]
    assert len(lists) == 1, asked
    assert not [command for command in asked if command not in lists and any(names(command, j) for j in sleepers)], asked
    assert found[quick].state == "COMPLETED"
    monkeypatch.undo()
    for job_id in sleepers:
        assert found[job_id].state in ("PENDING", "RUNNING")
        assert found[job_id].state == backend.status(job_id).state or backend.status(job_id).state == "RUNNING"
