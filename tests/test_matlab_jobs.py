"""MATLAB's job functions (hpcbridge/matlab.py) called with the types MATLAB passes, on real local jobs:
name-value pairs as a struct (dict), counts as doubles (float), ids as text or numbers."""

from __future__ import annotations

import sys
import warnings

import pytest

from hpcbridge import matlab as jobs_for_matlab
from hpcbridge.client import matlab
from hpcbridge.client.arguments import ArgumentError
from hpcbridge.job import submit as jobs
from tests.conftest import job_processes, wait_for


def options(tmp_path, **more) -> dict:
    """A struct as MATLAB passes it: CamelCase names, doubles for counts."""
    return {"Scheduler": "local", "NtasksPerNode": 2.0, "CpusPerTask": 1.0, "Python": sys.executable,
            "SchedulerFile": str(tmp_path / "{job_id}" / "scheduler.json"), **more}


@pytest.fixture
def ended_after():
    """Job ids to cancel (and check gone) after the test."""
    started: list[str] = []
    yield started
    for job_id in started:
        job = jobs.find(job_id)
        if job is not None and not job.status().finished:
            job.cancel()
        assert wait_for(lambda: not job_processes(job_id), timeout=30)


def test_submit_status_list_logs_and_cancel_from_matlab(tmp_path, ended_after) -> None:
    job = jobs_for_matlab.submit(options(tmp_path, Time="10m", JobName="from-matlab"))
    ended_after.append(job["job_id"])
    cluster = matlab.connect(job["scheduler_file"], 2.0, 60.0)["cluster"]
    assert jobs_for_matlab.status(job["job_id"])["state"] == "RUNNING"
    listed = {entry["job_id"]: entry for entry in jobs_for_matlab.clusters()}
    assert listed[job["job_id"]]["workers"] == 2.0 and listed[job["job_id"]]["name"] == "from-matlab"
    assert "hpcbridge: scheduler file ready" in jobs_for_matlab.logs(job["job_id"], "", 0.0)
    assert len(jobs_for_matlab.logs(job["job_id"], "", 3.0).splitlines()) == 3
    assert jobs_for_matlab.cancel(job["job_id"]) == f"cancelled {job['job_id']}"
    with pytest.raises(matlab.ClusterEnded, match=f"you cancelled job {job['job_id']}"):
        matlab.runs(cluster)  # at once: no wait for a scheduler file, no Dask error
    with pytest.raises(matlab.ClusterEnded):
        matlab.map(cluster, "operator:neg", (1.0, 2.0))
    assert wait_for(lambda: jobs_for_matlab.status(job["job_id"])["finished"], timeout=30)


def test_connect_with_options_starts_a_cluster_and_shutdown_is_said_at_once(tmp_path, ended_after) -> None:
    attached = jobs_for_matlab.connect(options(tmp_path, IdleTimeout=0.0), 2.0, 60.0)
    ended_after.append(attached["job_id"])
    assert attached["workers"] == 2
    run = matlab.map(attached["cluster"], "operator:neg", (1.0, 2.0, 3.0), (), "", False, 1.0)
    assert list(matlab.gather(attached["cluster"], run)) == [-1.0, -2.0, -3.0]
    matlab.shutdown(attached["cluster"])
    with pytest.raises(matlab.ClusterEnded, match="you shut it down with hpcbridge.shutdown"):
        matlab.runs(attached["cluster"])


def test_a_cluster_cancelled_elsewhere_is_said_ended_not_a_dask_error(tmp_path, ended_after) -> None:
    job = jobs_for_matlab.submit(options(tmp_path))
    ended_after.append(job["job_id"])
    cluster = matlab.connect(job["scheduler_file"], 2.0, 60.0)["cluster"]
    jobs.find(job["job_id"]).cancel()  # hpcbridge cancel in a terminal
    assert wait_for(lambda: jobs.find(job["job_id"]).status().finished, timeout=30)
    # The job reads as ended a moment before its scheduler's process is gone (and still answers).
    assert wait_for(lambda: not job_processes(job["job_id"]), timeout=30)
    with pytest.raises(matlab.ClusterEnded, match=f"job {job['job_id']} is CANCELLED"):
        matlab.runs(cluster)


def test_bad_options_name_the_option_as_matlab_spelled_it(tmp_path) -> None:
    with pytest.raises(ArgumentError, match="Nodez.*a known option"):
        jobs_for_matlab.submit(options(tmp_path, Nodez=2.0))
    with pytest.raises(ArgumentError, match=r"Nodes: 2\.5 is not allowed"):
        jobs_for_matlab.submit(options(tmp_path, Nodes=2.5))
    with pytest.raises(jobs_for_matlab.OptionError, match=r"^NtasksPerNode: 0 is not allowed"):
        jobs_for_matlab.submit(options(tmp_path, NtasksPerNode=0.0))
    with pytest.raises(ArgumentError, match="job"):
        jobs_for_matlab.status(("4242",))
    assert jobs_for_matlab.option_name("ntasks-per-node") == "ntasks_per_node"


def test_python_warnings_are_kept_for_matlab_not_printed(tmp_path, ended_after, capfd) -> None:
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        job = jobs_for_matlab.submit(options(tmp_path, Protocol="tcp"))
    ended_after.append(job["job_id"])
    said = matlab.warnings_said()
    assert any("protocol tcp" in line for line in said), said
    assert "protocol tcp" not in capfd.readouterr().err
    assert matlab.warnings_said() == []
