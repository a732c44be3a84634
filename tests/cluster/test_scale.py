"""Workers for a running cluster (hpcbridge scale JOB --add N) on the real Slurm of the harness.

One harness for the module (one node of 4 CPUs): a scheduler-file cluster of one worker, a
joining job with another CA's certificates (refused by TLS), then a joining job of two workers
that the map uses, that status lists and that the cluster's cancel ends.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from click.testing import CliRunner

from hpcbridge.backends.job import SubmittedJob
from hpcbridge.cli import main as cli
from hpcbridge.client.attach import wait_for_scheduler_file
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.tls import create_certificates
from tests.conftest import wait_for


def job_of_worker(item: int) -> tuple[str, str]:
    """Which batch job and which worker ran ``item`` (it sleeps, so every worker gets items)."""
    import time

    from distributed import get_worker

    time.sleep(0.2)
    return os.environ.get("SLURM_JOB_ID", ""), get_worker().address


def _scale(cluster, job_id: str, *options: str) -> SubmittedJob:
    result = CliRunner().invoke(cli, ["scale", job_id, "--scheduler", "slurm", "--time", "10m", "--mem-per-cpu", "300M",
                                      "--interface", cluster.interface, "--python", sys.executable, "-J", "joining",
                                      "--json", *options])
    assert result.exit_code == 0, result.output
    values = json.loads(result.output.splitlines()[-1])
    assert values["joins"] == job_id and values["scheduler_file"] is None
    return SubmittedJob(values["job_id"], "slurm", None, joins=job_id)


def _queued(cluster, *job_ids: str) -> list[str]:
    return cluster.run("squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)).stdout.split()


def test_a_joined_job_adds_workers_that_status_lists_and_cancel_ends(
        slurm_cluster, batch_spec, batch_jobs, tmp_path) -> None:
    cluster = jobs.submit(batch_spec(slurm_cluster, "slurm", ntasks_per_node=1, mem_per_cpu="300M", job_name="joined"))
    batch_jobs.append(cluster)
    wait_for_scheduler_file(cluster.scheduler_file, timeout=60)

    # Workers with another CA's certificate are refused by the cluster's TLS.
    other = create_certificates(tmp_path / "other-ca")
    stranger = _scale(slurm_cluster, cluster.job_id, "--add", "1", "--tls-ca-file", str(other.ca_file),
                      "--tls-cert", str(other.cert), "--tls-key", str(other.key))
    batch_jobs.append(stranger)

    def refused() -> bool:
        log = stranger.status().log
        text = Path(log).read_text(errors="replace") if log and Path(log).exists() else ""
        return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text

    assert wait_for(refused, timeout=60), Path(stranger.status().log).read_text(errors="replace")[-3000:]

    with connect(cluster.scheduler_file, n_workers=1, timeout=60) as bridge:
        assert len(bridge.client.scheduler_info(n_workers=-1)["workers"]) == 1  # the stranger did not join
        stranger.cancel()

        joined = _scale(slurm_cluster, cluster.job_id, "--add", "2")
        batch_jobs.append(joined)
        bridge.client.wait_for_workers(3, timeout=120)
        ran = bridge.gather(bridge.map(job_of_worker, range(40), chunk_size=1))
    by_job = {job_id: {address for job, address in ran if job == job_id} for job_id, _ in ran}
    assert set(by_job) == {cluster.job_id, joined.job_id}, by_job
    assert (len(by_job[cluster.job_id]), len(by_job[joined.job_id])) == (1, 2)  # every worker ran items

    status = CliRunner().invoke(cli, ["status", cluster.job_id, "--scheduler", "slurm"])
    assert status.exit_code == 0, status.output
    assert f"worker jobs joined: {stranger.job_id} (" in status.output
    assert f"{joined.job_id} (RUNNING)" in status.output

    cancelled = CliRunner().invoke(cli, ["cancel", cluster.job_id, "--scheduler", "slurm"])
    assert cancelled.exit_code == 0, cancelled.output
    assert wait_for(lambda: not _queued(slurm_cluster, cluster.job_id, joined.job_id), timeout=60), \
        _queued(slurm_cluster, cluster.job_id, joined.job_id)
    assert joined.status().state == "CANCELLED"
