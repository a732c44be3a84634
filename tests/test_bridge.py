"""Attaching through a scheduler file: every wait has a deadline and a message that says why."""

from __future__ import annotations

import json
import socket
import time

import pytest

from hpcbridge.backends.base import JobStatus
from hpcbridge.client import bridge as bridges
from hpcbridge.client.bridge import ConnectError, connect
from hpcbridge.job import submit as jobs


def test_a_missing_scheduler_file_times_out_instead_of_hanging(tmp_path) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectError, match="no scheduler file at .*missing.json after 1 s"):
        connect(tmp_path / "missing.json", timeout=1)
    assert time.monotonic() - started < 10


def test_a_file_pointing_at_a_dead_scheduler_says_so(tmp_path) -> None:
    with socket.socket() as probe:  # a port nobody listens on once the socket closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "stale.json"
    path.write_text(json.dumps({"address": f"tcp://127.0.0.1:{port}", "type": "Scheduler"}))
    with pytest.raises(ConnectError, match="does not answer"):
        connect(path, timeout=3)


class StaticJob:
    """A job the batch system reports in one state, with its output at ``log``."""

    scheduler = "slurm"
    job_id = "9"

    def __init__(self, state: str, log, reason: str | None = None) -> None:
        self.state, self.log, self.reason = state, str(log), reason

    def status(self) -> JobStatus:
        return JobStatus(self.job_id, self.state, reason=self.reason, log=self.log)


def test_waiting_for_a_file_says_whether_the_job_is_queued_running_or_lost_its_file(tmp_path) -> None:
    missing = tmp_path / "9" / "scheduler.json"
    log = tmp_path / "job-9.out"
    pending = StaticJob("PENDING", log, reason="Resources: waiting for nodes to become free")
    with pytest.raises(ConnectError, match=r"job 9 is still queued \(PENDING: Resources: waiting for nodes"):
        connect(missing, timeout=1.5, job=pending)
    log.write_text("hpcbridge: waiting for the Dask scheduler to write x.dask\n")
    with pytest.raises(ConnectError, match="though job 9 is RUNNING: its Dask scheduler has not started"):
        connect(missing, timeout=1.5, job=StaticJob("RUNNING", log))
    # It published the file, which is gone: said in seconds, whatever the timeout.
    log.write_text(log.read_text() + f"hpcbridge: scheduler file ready: {missing}\n")
    started = time.monotonic()
    with pytest.raises(ConnectError, match=f"job 9 is RUNNING and published its scheduler file {missing}, which is "
                                           "gone: its folder was removed while the job runs"):
        connect(missing, timeout=600, job=StaticJob("RUNNING", log))
    assert time.monotonic() - started < 60
    log.write_text(log.read_text() + "hpcbridge: warning: the scheduler file ... is gone while the job runs\n")
    with pytest.raises(ConnectError, match="job 9 is RUNNING, and its output says: the scheduler file ... is gone"):
        connect(missing, timeout=600, job=StaticJob("RUNNING", log))
    # A new start of the job (a requeue that appends to its output) has not published its file yet.
    log.write_text(log.read_text() + "hpcbridge: waiting for the Dask scheduler to write x.dask\n")
    with pytest.raises(ConnectError, match="though job 9 is RUNNING: its Dask scheduler has not started"):
        connect(missing, timeout=5, job=StaticJob("RUNNING", log))


def test_too_few_workers_is_reported_with_the_count(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=1))
    local_jobs.append(job)
    # The one worker first (a TLS cluster's start takes a few seconds more on a busy machine), then the count.
    with connect(job.scheduler_file, n_workers=1, timeout=60) as bridge:
        with pytest.raises(ConnectError, match="only 1 of 3 workers joined"):
            bridge.wait_for_workers(3, timeout=5)


def test_a_bridge_follows_the_scheduler_file_a_requeued_cluster_rewrites(tmp_path) -> None:
    """A requeued job comes back with a new scheduler at the same file: the same bridge works on."""
    from distributed import LocalCluster

    from tests.conftest import wait_for

    path = tmp_path / "scheduler.json"
    first = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None)
    second = None
    try:
        path.write_text(json.dumps({"address": first.scheduler_address, "type": "Scheduler"}))
        bridge = connect(path, timeout=30, run_directory=tmp_path / "runs")
        try:
            assert bridge.gather(bridge.map(abs, [-1, -2], progress=False), progress=False) == [1, 2]
            first.close()
            assert wait_for(lambda: not bridge.connected, timeout=60)
            second = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None)
            path.write_text(json.dumps({"address": second.scheduler_address, "type": "Scheduler"}))
            run = bridge.map(abs, [-3, -4], progress=False)  # no new connect
            assert bridge.client.scheduler.address == second.scheduler_address
            assert bridge.gather(run, progress=False) == [3, 4]
        finally:
            bridge.close()
    finally:
        first.close()
        if second is not None:
            second.close()


class RestartingJob:
    """A job as the batch system reports it: running, requeued ``restarts`` times."""

    scheduler = "slurm"
    job_id = "7"

    def __init__(self) -> None:
        self.restarts = 0

    def status(self) -> JobStatus:
        return JobStatus(self.job_id, "RUNNING", restarts=self.restarts)


def test_a_bridge_follows_a_job_that_runs_again_before_its_old_scheduler_file_is_replaced(tmp_path, monkeypatch) -> None:
    """A requeued job that starts again at once is RUNNING while its script has not yet replaced the
    old file (seconds on a busy node; more than the 15 s grace in a fresh CI run): its restart count
    says it was requeued, and the bridge waits for the new file instead of giving up."""
    import threading

    from distributed import LocalCluster

    from tests.conftest import wait_for

    monkeypatch.setattr(bridges, "FOLLOW_GRACE_SECONDS", 1.0)  # what a scheduler dead in a running job gets
    path = tmp_path / "scheduler.json"
    job = RestartingJob()
    first = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=":0")
    second = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=":0")
    rewrite = threading.Timer(4.0, lambda: path.write_text(
        json.dumps({"address": second.scheduler_address, "type": "Scheduler"})))
    try:
        path.write_text(json.dumps({"address": first.scheduler_address, "type": "Scheduler"}))
        bridge = connect(path, timeout=30, job=job)
        try:
            first.close()
            assert wait_for(lambda: not bridge.connected, timeout=60)
            job.restarts = 1  # requeued and running again; the file still names the old scheduler
            rewrite.start()  # the new start's script replaces it 4 s later, after the grace
            started = time.monotonic()
            assert bridge.gather(bridge.map(abs, [-3, -4], progress=False), progress=False) == [3, 4]
            assert 3.0 < time.monotonic() - started < 60
            assert bridge.client.scheduler.address == second.scheduler_address
        finally:
            bridge.close()
    finally:
        rewrite.cancel()
        first.close()
        second.close()
