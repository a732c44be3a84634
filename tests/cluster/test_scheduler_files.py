"""Scheduler files and batch-system words on a real Slurm (three nodes in namespaces over ib0).

A cluster's file is never attached to by the wrong client, never deleted or replaced while its
cluster runs, and a broken one is reported as broken; when Slurm requeues a job after a node
failure, status says so in Slurm's words and the bridge raises a clear error. One harness for
the module.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcbridge.backends import get_backend
from hpcbridge.client.bridge import ConnectError, connect
from hpcbridge.job import submit as jobs
from hpcbridge.job.render import render_script
from hpcbridge.job.spec import JobSpec
from hpcbridge.scheduler_file import SchedulerFileInUse
from tests.conftest import wait_for

NODE_FAILURE_BOUND = 180  # seconds; Slurm declares a node dead after SlurmdTimeout=60 s (+ ping interval)


@pytest.fixture
def submitted(slurm_cluster_3nodes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Jobs submitted by a test; each is cancelled (and checked ended) at the end."""
    monkeypatch.chdir(tmp_path)
    made: list[jobs.SubmittedJob] = []
    yield made
    for job in made:
        job.cancel()
        assert wait_for(lambda: job.status().finished or job.status().state == "UNKNOWN", timeout=60)


def spec_for(cluster, scheduler_file: Path, **values) -> JobSpec:
    values.setdefault("nodes", 1)
    return JobSpec(scheduler="slurm", interface=cluster.interface, python=sys.executable, walltime="10m",
                   scheduler_file=str(scheduler_file), ntasks_per_node=1, mem_per_cpu="500M", **values)


def cli(*arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpcbridge.cli", *arguments], capture_output=True, text=True,
                          timeout=120)


def test_a_live_clusters_file_is_kept_and_a_stale_one_replaced(slurm_cluster_3nodes, submitted, tmp_path) -> None:
    shared = tmp_path / "shared" / "scheduler.json"
    spec = spec_for(slurm_cluster_3nodes, shared)
    first = jobs.submit(spec)
    submitted.append(first)
    with connect(job=first, n_workers=1, timeout=120) as bridge:
        assert bridge.job == first
    identity = json.loads(shared.read_text())["hpcbridge"]
    assert (identity["job_id"], identity["scheduler"]) == (first.job_id, "slurm") and len(identity["cluster"]) == 16

    # hpcbridge submit to the same path: refused, nothing submitted, the file untouched.
    with pytest.raises(SchedulerFileInUse, match=f"belongs to job {first.job_id} \\(slurm\\), which is still RUNNING"):
        jobs.submit(spec)
    # The same script submitted by hand (sbatch): the job refuses to replace the file and fails.
    by_hand = jobs.SubmittedJob(get_backend("slurm").submit(render_script(spec)), "slurm", str(shared))
    submitted.append(by_hand)
    with pytest.raises(ConnectError, match=f"written by job {first.job_id} \\(slurm\\), which is still RUNNING, "
                                           f"not by job {by_hand.job_id}"):
        connect(job=by_hand, timeout=60)
    assert wait_for(lambda: by_hand.status().finished, timeout=60)
    assert "belongs to a cluster that is still running; not replacing it" in Path(by_hand.status().log).read_text()
    assert json.loads(shared.read_text())["hpcbridge"] == identity
    # `hpcbridge connect JOB` finds the job's file from its id alone.
    attached = cli("connect", first.job_id, "--timeout", "60")
    assert attached.returncode == 0, attached.stderr
    assert f"job:       {first.job_id} (slurm)" in attached.stdout

    # Once the cluster has ended, its leftover file is stale: clients are told so, submit replaces it.
    leftover = shared.read_text()
    assert first.cancel() is None and not shared.exists()  # cancel removes the file and the certificates
    assert wait_for(lambda: first.status().finished, timeout=60)
    shared.write_text(leftover)  # what a scheduler killed with its node leaves behind
    with pytest.raises(ConnectError, match=f"does not answer, and job {first.job_id} has ended \\(CANCELLED"):
        connect(shared, timeout=600)  # at once, whatever the timeout
    second = jobs.submit(spec)
    submitted.append(second)
    with connect(job=second, n_workers=1, timeout=120) as bridge:
        assert bridge.job.job_id == second.job_id != first.job_id
        bridge.shutdown()  # ends the cluster and removes its file and certificates
    assert not shared.exists() and not shared.with_name("scheduler.tls").exists()
    assert wait_for(lambda: second.status().finished, timeout=60)


def test_a_broken_file_is_reported_as_broken_and_left_alone(slurm_cluster_3nodes, tmp_path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"address": "tls://10.77.0.1:1234", ')
    with pytest.raises(ConnectError, match="is not a scheduler file: invalid JSON"):
        connect(broken, timeout=30)
    shown = cli("connect", str(broken), "--timeout", "30")
    assert shown.returncode == 1 and shown.stderr.startswith("Error: ") and "invalid JSON" in shown.stderr
    with pytest.raises(SchedulerFileInUse, match="invalid JSON"):
        jobs.submit(spec_for(slurm_cluster_3nodes, broken))
    assert broken.exists()


def test_a_purged_folder_is_said_by_the_job_status_and_connect(slurm_cluster_3nodes, submitted, tmp_path) -> None:
    """A scratch purge removes the scheduler file's folder while the job runs: the job's output and
    ``hpcbridge status`` say so, and ``connect JOB`` says it at once instead of "may still be queued"."""
    job = jobs.submit(spec_for(slurm_cluster_3nodes, tmp_path / "scratch" / "{job_id}" / "scheduler.json"))
    submitted.append(job)
    with connect(job=job, n_workers=1, timeout=120):
        pass
    shutil.rmtree(Path(job.scheduler_file).parent)
    attached = cli("connect", job.job_id, "--scheduler", "slurm", "--timeout", "300")  # 120 s at most (cli's bound)
    assert attached.returncode == 1 and f"job {job.job_id} is RUNNING" in attached.stderr, attached.stderr
    assert "gone" in attached.stderr and "queued" not in attached.stderr, attached.stderr
    assert wait_for(lambda: "gone while the job runs" in Path(job.status().log).read_text(), timeout=60)
    shown = cli("status", job.job_id, "--scheduler", "slurm")
    assert f"{job.job_id}: RUNNING" in shown.stdout, shown.stdout
    assert f"  warning: the scheduler file {job.scheduler_file} is gone while the job runs" in shown.stdout, shown.stdout


def test_a_node_failure_is_said_in_slurms_words(slurm_cluster_3nodes, submitted, tmp_path) -> None:
    cluster = slurm_cluster_3nodes
    job = jobs.submit(spec_for(cluster, tmp_path / "{job_id}" / "scheduler.json", nodes=2))
    submitted.append(job)
    bridge = connect(job=job, n_workers=2, timeout=120)
    record = dict(field.split("=", 1) for field in cluster.run("scontrol", "show", "job", "-o", job.job_id)
                  .stdout.split() if "=" in field)
    batch_host = record["BatchHost"]
    worker_node = next(node for node in cluster.nodes if node != batch_host and node in _expand(record["NodeList"]))
    veth = f"hpcb{cluster.netns[0].split('-')[1]}v{worker_node.removeprefix('node')}"
    subprocess.run(["ip", "link", "set", veth, "down"], check=True, timeout=30)
    try:
        # Slurm ends the whole job (COMPLETING, Restarts=1), then queues it again.
        assert wait_for(lambda: job.status().restarts >= 1 and job.status().state in ("PENDING", "RUNNING"),
                        timeout=NODE_FAILURE_BOUND, interval=2), job.status()
        status = job.status()
        assert status.state in ("PENDING", "RUNNING"), status
        assert "node failure: Slurm ended the job" in status.reason and "DUE TO NODE FAILURE" in status.reason
        assert "requeued it (Restarts=1)" in status.reason
        if status.state == "PENDING":
            assert "pending again" in status.reason
        shown = cli("status", job.job_id, "--scheduler", "slurm")
        assert shown.returncode == 0 and "DUE TO NODE FAILURE" in shown.stdout and "Restarts=1" in shown.stdout
        with pytest.raises(ConnectError, match=f"is gone .* job {job.job_id} \\(slurm\\) is (PENDING|RUNNING): node failure"):
            bridge.n_workers
    finally:
        bridge.client.close(timeout=5)
        subprocess.run(["ip", "link", "set", veth, "up"], check=True, timeout=30)
        cluster.run("scontrol", "update", f"nodename={worker_node}", "state=resume")
    # Started again at once (not 2 min after the requeue), then cancelled while it runs.
    cluster.run("scontrol", "update", f"jobid={job.job_id}", "StartTime=now")
    assert wait_for(lambda: job.status().state == "RUNNING" and Path(job.scheduler_file).exists(), timeout=90), \
        job.status()
    ended = cli("cancel", job.job_id, "--scheduler", "slurm")
    assert ended.returncode == 0 and ended.stdout.strip() == f"cancelled {job.job_id}"
    assert wait_for(lambda: job.status().finished, timeout=60)
    again = cli("cancel", job.job_id, "--scheduler", "slurm")
    assert again.returncode == 0 and again.stdout.startswith(f"job {job.job_id} had already ended: CANCELLED")
    assert "then cancelled while running, after 1 restart" in again.stdout and "pending" not in again.stdout, \
        again.stdout


def _expand(node_list: str) -> list[str]:
    """``node[1-2]`` → ``['node1', 'node2']`` (the harness's simple names)."""
    if "[" not in node_list:
        return node_list.split(",")
    prefix, ranges = node_list.rstrip("]").split("[")
    names = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        names += [f"{prefix}{k}" for k in range(int(low), int(high or low) + 1)]
    return names
