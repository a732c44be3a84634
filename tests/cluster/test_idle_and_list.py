"""On the harness's real Slurm: a cluster left without a client ends itself after --idle-timeout, and
hpcbridge list shows Slurm and local clusters side by side."""

from __future__ import annotations

import json

from click.testing import CliRunner

from hpcbridge.cli import main
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.job.listing import list_clusters
from tests.conftest import job_processes, wait_for

IDLE = 20  # seconds


def test_an_idle_slurm_cluster_ends_itself_and_status_and_list_say_why(slurm_cluster, batch_spec, batch_jobs,
                                                                        tmp_path) -> None:
    job = jobs.submit(batch_spec(slurm_cluster, "slurm", ntasks_per_node=1, cpus_per_task=1, mem_per_cpu="300M",
                                 job_name="idler", idle_timeout=f"{IDLE}s"))
    batch_jobs.append(job)
    local = jobs.submit(batch_spec(slurm_cluster, "local", interface=None, ntasks_per_node=1, idle_timeout=0))
    try:
        with connect(job.scheduler_file, n_workers=1, timeout=120) as bridge:
            run = bridge.map(abs, range(-5, 5), name="idle-kept", chunk_size=5, progress=False)
            bridge.client.gather(run.futures)
            with connect(local.scheduler_file, n_workers=1, timeout=120):
                listed = {(entry.scheduler, entry.job_id): entry for entry in list_clusters()}
            assert listed[("slurm", job.job_id)].state == "RUNNING"
            assert listed[("slurm", job.job_id)].workers == 1
            assert 0 < listed[("slurm", job.job_id)].walltime_left <= 600
            assert listed[("local", local.job_id)].state == "RUNNING"
        assert wait_for(lambda: job.status().finished, timeout=IDLE + 40)
    finally:
        local.cancel()
        assert wait_for(lambda: not job_processes(local.job_id), timeout=30)
    assert (job.status().state, job.status().exit_code) == ("COMPLETED", 0)
    assert list((tmp_path / "runs" / "idle-kept").iterdir())
    shown = CliRunner().invoke(main, ["status", job.job_id, "--scheduler", "slurm"])
    assert f"COMPLETED (ended after {IDLE} s idle" in shown.output, shown.output
    listed = json.loads(CliRunner().invoke(main, ["list", "--json"]).output)
    slurm_entry = next(entry for entry in listed if entry["job_id"] == job.job_id)
    assert slurm_entry["state"] == "COMPLETED" and slurm_entry["ended"].startswith(f"ended after {IDLE} s idle")
    assert slurm_entry["core_hours"] > 0
    assert next(entry for entry in listed if entry["job_id"] == local.job_id)["state"] == "CANCELLED"


def test_an_idle_dask_mpi_cluster_ends_itself_too(slurm_cluster, batch_spec, batch_jobs) -> None:
    job = jobs.submit(batch_spec(slurm_cluster, "slurm", mode="mpi", ntasks_per_node=2, cpus_per_task=1,
                                 mem="600M", idle_timeout=f"{IDLE}s"))
    batch_jobs.append(job)
    with connect(job=job, n_workers=1, timeout=120) as bridge:
        assert bridge.gather(bridge.map(abs, [-1, -2])) == [1, 2]
    assert wait_for(lambda: job.status().finished, timeout=IDLE + 60)
    shown = CliRunner().invoke(main, ["status", job.job_id, "--scheduler", "slurm"])
    assert f"COMPLETED (ended after {IDLE} s idle" in shown.output.splitlines()[0], shown.output
