"""The local backend runs the same scheduler-file script as a batch job, as real processes."""

from __future__ import annotations

import json
import operator
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import dask
import numpy as np
import pytest

from hpcbridge.client.attach import wait_for_scheduler_file
from hpcbridge.client.bridge import ConnectError, connect
from hpcbridge.job import submit as jobs
from hpcbridge.workloads.primes import sum_prime_factors
from tests.conftest import job_processes, wait_for


def test_demo_computes_the_exact_sum_and_leaves_nothing_running(hpcbridge_home: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "hpcbridge.cli", "demo", "--upper", "10000", "--workers", "2"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^  sum: +10218029$", done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^  workers: +2$", done.stdout, re.MULTILINE)
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/status", done.stdout)
    assert (done.stdout + done.stderr).count("/status") == 1  # the dashboard link, said once
    # Progress counts the numbers factored (the map's items are ranges of them), ending at all 9998.
    assert re.search(r"factoring: 100% \(9998/9998 numbers, ", done.stderr), done.stderr
    assert " items" not in done.stderr
    job_id = re.search(r"local job (local-[0-9a-f]+)", done.stdout).group(1)
    assert job_processes(job_id) == []
    assert done.stderr.count("Traceback") == 0
    # Its scheduler file was where every job's goes (the state home's jobs/), and a demo that ended
    # well leaves no record, log or folder behind: they piled up, one set per demo.
    assert f"at {hpcbridge_home / 'jobs' / job_id / 'scheduler.json'}" in done.stdout
    assert [path for path in hpcbridge_home.rglob("*") if path.is_file()] == []
    assert not list(hpcbridge_home.rglob(f"*{job_id}*"))


def test_job_runs_until_the_client_shuts_it_down(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=2, cpus_per_task=1, mem="2G"))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=60) as bridge:
        assert job.status().state == "RUNNING"
        assert bridge.n_workers == 2 and bridge.total_threads == 2
        limits = {w["memory_limit"] for w in bridge.client.scheduler_info(n_workers=-1)["workers"].values()}
        assert limits == {896 * 2**20}  # (2 GiB less an eighth for the scheduler) / 2 workers
        assert profiling(bridge) == {"False"}  # its sampling slowed SymPy 5-13 %
        assert clocks(bridge) == {("1s", "2s")}  # Dask's 20 ms tick and 500 ms monitor: 12 % of a core idle
        offset = bridge.broadcast(np.arange(1000.0))
        results = bridge.gather(bridge.map(operator.add, range(20), args=(offset,)))
        assert [float(r.sum()) for r in results] == [499500.0 + 1000 * i for i in range(20)]
        assert bridge.gather([bridge.submit(sum_prime_factors, (2, 10000))]) == [10218029]
        bridge.shutdown()
    assert wait_for(lambda: job.status().finished, timeout=30)
    assert (job.status().state, job.status().exit_code) == ("COMPLETED", 0)
    assert not Path(job.scheduler_file).exists()
    assert wait_for(lambda: not job_processes(job.job_id), timeout=15)
    assert "gone while the job runs" not in Path(job.status().log).read_text()  # shutdown removes it: no alarm


def test_a_cluster_its_client_shuts_down_leaves_a_clean_log(local_spec, local_jobs) -> None:
    """A planned end reads clean: no traceback, no ERROR line, no warning that computed results are lost."""
    job = jobs.submit(local_spec(ntasks_per_node=2, cpus_per_task=1))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=60) as bridge:
        held = bridge.client.map(operator.neg, range(50))  # results held in the workers' memory at the end
        assert bridge.client.gather(held) == [-i for i in range(50)]
        bridge.gather(bridge.map(operator.neg, range(100), progress=False), progress=False, release=False)
        bridge.shutdown()
    assert wait_for(lambda: job.status().finished, timeout=30)
    assert (job.status().state, job.status().exit_code) == ("COMPLETED", 0)
    assert wait_for(lambda: not job_processes(job.job_id), timeout=15)
    log = Path(job.status().log).read_text()
    assert "Traceback" not in log and "Error" not in log, log
    # A loaded machine makes Dask warn that its event loop was slow: that is no fault of the ending.
    warned = [line for line in log.splitlines() if " - WARNING - " in line and "Event loop was unresponsive" not in line]
    assert " - ERROR - " not in log and not warned, log


def profiling(bridge) -> set:
    """Whether Dask's statistical profiler samples the workers (their config, from each)."""
    return {str(value) for value in bridge.client.run(dask.config.get, "distributed.worker.profile.enabled").values()}


def clocks(bridge) -> set:
    """The event-loop tick and system-monitor intervals of the scheduler and every worker."""
    def intervals() -> tuple[str, str]:
        return (str(dask.config.get("distributed.admin.tick.interval")),
                str(dask.config.get("distributed.admin.system-monitor.interval")))

    return {*bridge.client.run(intervals).values(), bridge.client.run_on_scheduler(intervals)}


def test_a_job_given_the_profiler_runs_it(local_spec, local_jobs, monkeypatch) -> None:
    monkeypatch.setenv("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED", "True")
    monkeypatch.setenv("DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL", "20ms")  # and Dask's own clocks, when asked
    job = jobs.submit(local_spec(ntasks_per_node=1, cpus_per_task=1, mem="1G"))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=1, timeout=60) as bridge:
        assert profiling(bridge) == {"True"}
        assert clocks(bridge) == {("20ms", "2s")}
        bridge.shutdown()


def test_cancel_removes_the_jobs_folder_of_scheduler_files_when_it_is_empty(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=1))
    local_jobs.append(job)
    assert wait_for(lambda: Path(job.scheduler_file).exists(), timeout=60)
    folder = Path(job.scheduler_file).parent
    assert folder.name == job.job_id
    job.cancel()
    assert wait_for(lambda: job.status().finished, timeout=30)
    assert not folder.exists()


def test_cancel_ends_every_process_of_the_job(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=2))
    local_jobs.append(job)
    wait_for_scheduler_file(job.scheduler_file, timeout=60)
    assert len(job_processes(job.job_id)) >= 3
    job.cancel()
    assert wait_for(lambda: job.status().state == "CANCELLED", timeout=30)
    assert wait_for(lambda: not job_processes(job.job_id), timeout=30)


def test_a_scheduler_that_cannot_start_fails_the_job_fast(local_spec, local_jobs, tmp_path) -> None:
    # A Python that passes the preflight's import check, then cannot run the scheduler; plain tcp,
    # because with tls (the default) making the certificates would fail first.
    python = tmp_path / "python-without-a-scheduler"
    python.write_text(f'#!/bin/sh\n[ "$1" = -c ] && exec {sys.executable} "$@"\nexit 1\n')
    python.chmod(0o755)
    job = jobs.submit(local_spec(python=str(python), protocol="tcp"))
    local_jobs.append(job)
    with pytest.raises(ConnectError, match=f"job {job.job_id} ended \\(FAILED\\) without writing"):
        connect(job.scheduler_file, timeout=120, job=job)  # told when the job ended, not at the deadline
    status = job.status()
    assert status.state == "FAILED" and status.exit_code == 1
    assert "the Dask scheduler exited before writing" in Path(status.log).read_text()


def test_a_job_python_without_hpcbridge_cannot_make_certificates_and_says_so(local_spec, local_jobs, tmp_path) -> None:
    # A Python with distributed but without hpcbridge (its import of hpcbridge.tls fails).
    python = tmp_path / "python-without-hpcbridge"
    python.write_text(f'#!/bin/sh\ncase "$*" in *hpcbridge.tls*) exit 1;; esac\nexec {sys.executable} "$@"\n')
    python.chmod(0o755)
    job = jobs.submit(local_spec(python=str(python)))
    local_jobs.append(job)
    with pytest.raises(ConnectError, match=f"job {job.job_id} ended \\(FAILED\\) without writing"):
        connect(job.scheduler_file, timeout=120, job=job)
    assert (f"protocol tls (the default) makes this job's certificates with hpcbridge, which {python} "
            "cannot import") in Path(job.status().log).read_text()


def test_a_job_whose_folder_is_purged_says_so_and_connect_does_not_wait_for_it(local_spec, local_jobs) -> None:
    """A scratch purge removes the scheduler file's folder (and the certificates) while the job runs:
    the job's log and ``hpcbridge status`` say so, and ``connect JOB`` says it at once, not "queued"."""
    job = jobs.submit(local_spec())
    local_jobs.append(job)
    scheduler_file = Path(job.scheduler_file)
    with connect(job=job, n_workers=1, timeout=60) as bridge:
        shutil.rmtree(scheduler_file.parent)
        assert bridge.gather(bridge.map(abs, [-7], progress=False)) == [7]  # an attached client goes on
    log = Path(job.status().log)
    assert wait_for(lambda: "gone while the job runs" in log.read_text(), timeout=60), log.read_text()
    said = next(line for line in log.read_text().splitlines() if "gone while the job runs" in line)
    assert said.startswith(f"hpcbridge: warning: the scheduler file {scheduler_file} is gone while the job runs"), said
    assert "cannot rejoin" in said
    shown = subprocess.run([sys.executable, "-m", "hpcbridge.cli", "status", job.job_id], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith(f"{job.job_id}: RUNNING\n"), shown
    assert f"  warning: the scheduler file {scheduler_file} is gone while the job runs" in shown.stdout, shown.stdout
    attached = subprocess.run([sys.executable, "-m", "hpcbridge.cli", "connect", job.job_id, "--timeout", "300"],
                              capture_output=True, text=True, timeout=60)  # told at once, not after 300 s
    assert attached.returncode == 1 and "Traceback" not in attached.stderr, attached.stderr
    assert f"job {job.job_id} is RUNNING" in attached.stderr and str(scheduler_file) in attached.stderr
    assert "gone" in attached.stderr and "queued" not in attached.stderr, attached.stderr


def test_a_stale_scheduler_file_is_replaced_before_the_scheduler_starts(local_spec, local_jobs, tmp_path) -> None:
    path = tmp_path / "fixed-name.json"
    path.write_text(json.dumps({"address": "tcp://127.0.0.1:9", "type": "Scheduler"}))
    job = jobs.submit(local_spec(scheduler_file=str(path)))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=1, timeout=60) as bridge:
        assert bridge.client.scheduler.address != "tcp://127.0.0.1:9"
        bridge.shutdown()


@pytest.mark.parametrize(("command", "signum"), [
    (["-m", "hpcbridge.cli", "demo", "--upper", "100000000", "--workers", "2"], signal.SIGTERM),
    (["examples/primes.py", "--upper", "100000000", "--workers", "2"], signal.SIGHUP),
])
def test_sigterm_and_sighup_end_the_local_cluster_too(command: list[str], signum: int, hpcbridge_home: Path) -> None:
    """A terminal closing (SIGHUP) or a batch system ending the client (SIGTERM) leaves nothing running."""
    process = subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, cwd=Path(__file__).parents[1])
    job_id = None
    try:
        lines = []
        for line in process.stdout:  # the cluster is up once its dashboard is shown
            lines.append(line)
            if "dashboard" in line:
                break
        job_id = re.search(r"local job (local-[0-9a-f]+)", "".join(lines)).group(1)
        assert job_processes(job_id), "the local job runs"
        process.send_signal(signum)
        assert process.wait(timeout=60) == 128 + signum
        assert wait_for(lambda: not job_processes(job_id), timeout=30), job_processes(job_id)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if job_id and job_processes(job_id):  # the failure this test is for: end what it left
            jobs.SubmittedJob(job_id, "local", None).cancel()


def test_workers_that_joined_but_are_paused_for_memory_are_named_as_such(local_jobs, local_spec) -> None:
    """A worker whose memory limit is below what a bare worker uses pauses at once: it joined, but takes no
    work. connect must say that, not 'only 1 of 1 workers joined'."""
    from hpcbridge.client.attach import ConnectError
    from hpcbridge.client.bridge import connect

    job = jobs.submit(local_spec(ntasks_per_node=1, cpus_per_task=4, mem_per_cpu="20M"))  # a 70 MiB limit
    local_jobs.append(job)
    with pytest.raises(ConnectError, match=r"only 0 of 2 workers joined .* and run, within \d+ s; 1 of them paused: "
                                           r"its memory use is above Dask's pause threshold \(80 % of its 70 MiB"):
        connect(job.scheduler_file, n_workers=2, timeout=20)  # one worker: paused long before the wait ends


def test_a_command_line_python_runs_the_job_and_workers_write_nothing_in_its_working_directory(
        local_spec, local_jobs, tmp_path, monkeypatch) -> None:
    """--python as a command line (here env, as a container runtime would be) runs the preflight, the
    scheduler and the workers; their scratch goes to the node's disk ($SLURM_TMPDIR when there is no
    $TMPDIR), and the job's working directory stays empty."""
    work, scratch = tmp_path / "work", tmp_path / "node-scratch"
    work.mkdir()
    scratch.mkdir()
    monkeypatch.chdir(work)  # the local backend starts the job where it is submitted
    monkeypatch.delenv("TMPDIR", raising=False)
    monkeypatch.setenv("SLURM_TMPDIR", str(scratch))
    job = jobs.submit(local_spec(python=f"/usr/bin/env HPCBRIDGE_TEST_RUNTIME=container {sys.executable}",
                                 ntasks_per_node=2))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=120) as bridge:
        seen = bridge.client.run(lambda dask_worker: (dask_worker.local_directory,
                                                      __import__("os").environ.get("HPCBRIDGE_TEST_RUNTIME")))
        assert len(seen) == 2
        for folder, runtime in seen.values():
            assert folder.startswith(str(scratch / "dask-scratch-space")) and runtime == "container", seen
        assert bridge.gather(bridge.map(operator.neg, range(10))) == [-x for x in range(10)]
        bridge.shutdown()
    assert wait_for(lambda: job.status().finished, timeout=60), job.status()
    assert job.status().state == "COMPLETED", Path(job.status().log).read_text()
    assert list(work.iterdir()) == []


def test_a_job_submitted_under_a_blocked_signal_mask_can_still_be_cancelled(local_spec, local_jobs) -> None:
    """Octave blocks SIGTERM, SIGHUP and SIGINT in its main thread, and its children inherit the mask;
    a job started from there must still end on cancel."""
    blocked = {signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        job = jobs.submit(local_spec(ntasks_per_node=1))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)
    local_jobs.append(job)
    try:
        wait_for_scheduler_file(job.scheduler_file, timeout=60)
        assert job_processes(job.job_id)
        job.cancel()
        assert wait_for(lambda: not job_processes(job.job_id), timeout=30), job_processes(job.job_id)
        assert job.status().state == "CANCELLED"
    finally:
        for pid in job_processes(job.job_id):  # the failure this test is for: they ignore SIGTERM
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("ended_by", ["shutdown", "cancel"])
def test_a_call_after_shutdown_or_cancel_says_the_cluster_ended(ended_by, local_spec, local_jobs) -> None:
    """Not a wait for a scheduler file that 'may still be queued', nor Dask's raw CommClosedError."""
    job = jobs.submit(local_spec(ntasks_per_node=1))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=1, timeout=60) as bridge:
        bridge.shutdown() if ended_by == "shutdown" else job.cancel()
        if ended_by == "cancel":
            assert wait_for(lambda: job.status().finished, timeout=30)
            # The job reads as ended a moment before its scheduler's process is gone (and still answers).
            assert wait_for(lambda: not job_processes(job.job_id), timeout=30)
        expected = "shutdown\\(\\) ended it" if ended_by == "shutdown" else f"job {job.job_id} is CANCELLED"
        for call in (bridge.runs, lambda: bridge.map(abs, [1, 2], progress=False)):
            with pytest.raises(ConnectionError, match=expected):
                call()


def test_a_worker_closing_as_asked_does_not_log_that_it_died_unexpectedly() -> None:
    """distributed's stop-queue thread can report "died unexpectedly" while its worker closes as asked (a race
    seen in a clean end's log); the worker preload drops that record then, and only then."""
    import logging
    import types

    from distributed.core import Status

    from hpcbridge.cluster.quiet_exit import ClosingWorkerFilter

    worker = types.SimpleNamespace(status=Status.running)  # stands in for the worker: only its status is read
    quiet = ClosingWorkerFilter(worker)

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("distributed.nanny", logging.ERROR, __file__, 1, message, None, None)

    assert quiet.filter(record("Worker process died unexpectedly"))  # while running: a real death, kept
    for closing in (Status.closing, Status.closing_gracefully, Status.closed):
        worker.status = closing
        assert not quiet.filter(record("Worker process died unexpectedly"))
        assert quiet.filter(record("Restarting worker"))  # anything else is kept
