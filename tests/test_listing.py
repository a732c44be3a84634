"""hpcbridge list (and list_clusters) and logs --follow, on real local jobs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from click.testing import CliRunner

import hpcbridge
from hpcbridge.backends.job import SubmittedJob, note, recorded_jobs, recorded_notes, records_home
from hpcbridge.cli import main
from hpcbridge.client.attach import wait_for_scheduler_file
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.private_files import state_home
from tests.conftest import wait_for


def test_list_shows_every_cluster_with_workers_walltime_and_core_hours(local_spec, local_jobs) -> None:
    running = jobs.submit(local_spec(ntasks_per_node=2, walltime="10m", job_name="lister"))
    ended = jobs.submit(local_spec(ntasks_per_node=1))
    local_jobs.extend([running, ended])
    wait_for_scheduler_file(ended.scheduler_file, timeout=60)
    ended.cancel()
    assert wait_for(lambda: ended.status().finished, timeout=30)
    with connect(running.scheduler_file, n_workers=2, timeout=60):
        entries = {entry.job_id: entry for entry in hpcbridge.list_clusters()}
        shown = CliRunner().invoke(main, ["list"])
        as_json = json.loads(CliRunner().invoke(main, ["list", "--json"]).output)
    assert set(entries) == {running.job_id, ended.job_id}
    now = entries[running.job_id]
    assert (now.state, now.workers, now.name) == ("RUNNING", 2, "lister")
    assert 0 < now.walltime_left <= 600
    assert now.core_hours > 0
    assert entries[ended.job_id].state == "CANCELLED" and entries[ended.job_id].workers is None
    assert shown.exit_code == 0, shown.output
    header, *lines = shown.output.splitlines()
    assert header.split()[:4] == ["JOB", "SYSTEM", "NAME", "STATE"]
    line = next(line for line in lines if line.startswith(running.job_id))
    assert line.split()[1:5] == ["local", "lister", "RUNNING", "2"]
    assert {entry["job_id"]: entry["state"] for entry in as_json} == {running.job_id: "RUNNING",
                                                                        ended.job_id: "CANCELLED"}


def test_a_cluster_that_ended_over_a_week_ago_is_cleaned_up(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=1))
    local_jobs.append(job)
    wait_for_scheduler_file(job.scheduler_file, timeout=60)
    job.cancel()
    assert wait_for(lambda: job.status().finished, timeout=30)
    assert [entry.state for entry in hpcbridge.list_clusters()] == ["CANCELLED"]  # noted as it ended
    assert recorded_notes(job)["state"] == "CANCELLED"
    note(job, ended_at=time.time() - 8 * 24 * 3600)
    assert hpcbridge.list_clusters() == []
    assert jobs.find(job.job_id) is None
    assert not (state_home("local") / job.job_id).exists()
    assert CliRunner().invoke(main, ["list"]).output.startswith("no clusters")


def test_logs_follow_prints_as_the_job_writes_and_ends_with_the_job(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=1))
    local_jobs.append(job)
    command = [sys.executable, "-m", "hpcbridge.cli", "logs", job.job_id, "--follow"]
    follower = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    quitter = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        with connect(job.scheduler_file, n_workers=1, timeout=60) as bridge:
            time.sleep(1)
            quitter.send_signal(signal.SIGINT)  # Ctrl-C: stops following, quietly
            assert quitter.wait(timeout=30) == 130
            assert quitter.stderr.read() == ""
            assert follower.poll() is None  # the job runs: it follows on
            bridge.shutdown()
        out, err = follower.communicate(timeout=60)  # ends by itself with the job
    finally:
        for process in (follower, quitter):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert follower.returncode == 0, err
    assert "hpcbridge: scheduler file ready" in out and "End worker" in out
    assert f"job {job.job_id} ended: COMPLETED" in err


def test_forgetting_a_throwaway_cluster_forgets_the_worker_jobs_that_joined_it(tmp_path) -> None:
    cluster = SubmittedJob("local-c0ffee", "local", str(tmp_path / "scheduler.json"))
    joined = SubmittedJob("local-beef", "local", str(tmp_path / "scheduler.json"), joins=cluster.job_id)
    cluster.record()
    joined.record()
    assert {job.job_id for job, _ in recorded_jobs()} >= {"local-c0ffee", "local-beef"}
    jobs.forget(cluster)  # what the demo, the examples and the benchmarks do with their cluster
    assert not {job.job_id for job, _ in recorded_jobs()} & {"local-c0ffee", "local-beef"}
    assert not list(records_home().glob("*.joined"))
