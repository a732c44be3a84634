"""The adaptive cluster inside a batch job (hpcbridge up --adapt) on the real Slurm of the harness.

One harness for the module: a node of 4 CPUs and 4 GiB. The scheduler job takes 1 CPU and
1 GiB, each worker job 1 CPU and 1 GiB (dask-jobqueue rounds 700 MiB up), so 3 worker jobs run
at once and any more pend for resources. Intervals are short (1 s decisions, 3 idle decisions,
no cancel in a job's first 20 s) so the module stays within its CI budget; no assertion is timed.
The clusters run plain TCP: the per-job TLS certificates of the security work are not used here.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

import hpcbridge
from hpcbridge.cli import main as cli
from hpcbridge.job import adaptive
from hpcbridge.scheduler_file import read as read_scheduler_file
from hpcbridge.job import submit as jobs
from hpcbridge.job.spec import JobSpec, SpecError
from tests.conftest import wait_for

FAST = {"interval": 1, "wait_count": 3, "min_job_age": 20, "scheduler_mem": "1G", "idle_timeout": "10m"}


def slow_square(x: int) -> int:
    import time

    time.sleep(1.0)
    return x * x


def _queue(cluster, prefix: str) -> list[tuple[str, str, str]]:
    """(job id, name, state) of the jobs in squeue whose name starts with ``prefix``."""
    lines = cluster.run("squeue", "-h", "-o", "%i %j %T").stdout.split("\n")
    return [tuple(line.split()) for line in lines if line.split() and line.split()[1].startswith(prefix)]


def _workers(cluster, prefix: str, state: str | None = None) -> list[str]:
    return [job_id for job_id, name, job_state in _queue(cluster, prefix)
            if name == f"{prefix}-worker" and (state is None or job_state == state)]


@pytest.fixture
def adaptive_jobs(slurm_cluster):
    """Scheduler jobs started by a test: cancelled at the end, and every job of theirs checked gone."""
    started: list[tuple[str, object]] = []
    yield started
    for _, job in started:
        if not job.status().finished:
            job.cancel()
    for prefix, _ in started:
        if not wait_for(lambda: not _queue(slurm_cluster, prefix), timeout=60):
            left = _queue(slurm_cluster, prefix)
            for job_id, _, _ in left:
                slurm_cluster.run("scancel", job_id)
            pytest.fail(f"jobs left behind after the test: {left}")


def _start(batch_spec, slurm_cluster, adaptive_jobs, prefix: str, minimum: int, maximum: int, **settings):
    spec = batch_spec(slurm_cluster, "slurm", protocol="tcp", ntasks_per_node=1, mem_per_cpu="700M",
                      job_name=prefix)
    job = adaptive.start(spec, minimum, maximum, **{**FAST, **settings})
    adaptive_jobs.append((prefix, job))
    return job


def test_a_burst_scales_up_to_max_idle_scales_back_to_min_and_runs_outlive_clients(
        slurm_cluster, batch_spec, adaptive_jobs) -> None:
    began = time.monotonic()
    job = _start(batch_spec, slurm_cluster, adaptive_jobs, "hpcb-up", 1, 3)
    with hpcbridge.connect(job.scheduler_file, n_workers=1, timeout=120) as bridge:
        first_worker = time.monotonic() - began
        # The scheduler runs in the batch job, not in this process.
        started_with = bridge.client.run_on_scheduler(lambda: open("/proc/self/environ", "rb").read())
        assert f"SLURM_JOB_ID={job.job_id}".encode() in started_with.split(b"\0")
        assert os.environ.get("SLURM_JOB_ID") != job.job_id
        assert json.loads(Path(job.scheduler_file).read_text())["hpcbridge"]["job_id"] == job.job_id
        assert len(_workers(slurm_cluster, "hpcb-up")) == 1  # MIN before any work
        burst = time.monotonic()
        bridge.map(slow_square, range(40), name="burst", progress=False)
    # The client has gone; the cluster keeps the run and grows to MAX for it.
    assert wait_for(lambda: len(_workers(slurm_cluster, "hpcb-up", "RUNNING")) == 3, timeout=120), \
        _queue(slurm_cluster, "hpcb-up")
    scale_up = time.monotonic() - burst
    with hpcbridge.connect(job.scheduler_file, timeout=60) as bridge:
        assert bridge.results("burst") == [x * x for x in range(40)]
        idle = time.monotonic()
        assert wait_for(lambda: len(_workers(slurm_cluster, "hpcb-up")) == 1, timeout=120), \
            _queue(slurm_cluster, "hpcb-up")
        scale_down = time.monotonic() - idle
        assert wait_for(lambda: bridge.n_workers == 1, timeout=30)
        assert wait_for(lambda: sum("not needed" in entry["outcome"] for entry in
                                    adaptive.read_status(job.job_id, "slurm")["finished"]) == 2, timeout=30)
        bridge.shutdown()
    assert wait_for(lambda: not _queue(slurm_cluster, "hpcb-up"), timeout=60), _queue(slurm_cluster, "hpcb-up")
    assert not Path(job.scheduler_file).exists()
    print(f"\nadaptive: first worker {first_worker:.1f} s after submit; 1 -> 3 worker jobs running "
          f"{scale_up:.1f} s after the burst; 3 -> 1 {scale_down:.1f} s after the work ended")


def marked_square(x: int, marks: str) -> int:
    """Leave one file per execution (the count of executions survives the workers), take 0.5 s."""
    import time
    import uuid
    from pathlib import Path

    Path(marks, f"{x}-{uuid.uuid4().hex[:8]}").touch()
    time.sleep(0.5)
    return x * x


def _workers_over_time(events: list) -> list[tuple[float, int]]:
    """(time, workers in the scheduler) after each join and leave, from the scheduler's event log."""
    present: set[str] = set()
    counts = []
    for stamp, message in events:
        action = message.get("action") if isinstance(message, dict) else None
        if action in ("add-worker", "remove-worker"):
            (present.add if action == "add-worker" else present.discard)(message["worker"])
            counts.append((stamp, len(present)))
    return counts


def test_a_replacement_job_joins_before_a_draining_job_leaves_and_no_item_runs_twice(
        slurm_cluster, batch_spec, adaptive_jobs, tmp_path) -> None:
    # One worker job at a time (1:1), 2-minute walltime, 30 s margin: its worker drains 80-90 s
    # after it starts, with about 130 s of items (260 x 0.5 s) still to do for one worker.
    marks = tmp_path / "marks"
    marks.mkdir()
    spec = batch_spec(slurm_cluster, "slurm", protocol="tcp", ntasks_per_node=1, mem_per_cpu="700M",
                      job_name="hpcb-drain", walltime="2m", lifetime_margin=30)
    job = adaptive.start(spec, 1, 1, **{**FAST, "replace_lead": 40})
    adaptive_jobs.append(("hpcb-drain", job))
    items = list(range(260))
    with hpcbridge.connect(job.scheduler_file, n_workers=1, timeout=120) as bridge:
        run = bridge.map(marked_square, items, args=(str(marks),), name="drain", progress=False)
        assert bridge.gather(run, progress=False, timeout=400) == [x * x for x in items]
        ended = bridge.client.run_on_scheduler(lambda: __import__("time").time())
        events = bridge.client.get_events("all")
        drained = bridge.client.get_events("hpcbridge-drain")
        status = adaptive.read_status(job.job_id, "slurm")
        bridge.shutdown()
    counted = collections.Counter(int(path.name.split("-")[0]) for path in marks.iterdir())
    assert counted == collections.Counter(items), "an item ran twice, or not at all"
    assert drained, "no worker drained before its walltime during the map: the test did not test it"
    over_time = [(stamp, count) for stamp, count in _workers_over_time(events) if stamp <= ended]
    assert over_time and over_time[0][1] == 1
    assert min(count for _, count in over_time) >= 1, f"the cluster had no worker while items remained: {over_time}"
    assert len(status["finished"]) + len(status["jobs"]) >= 2  # a replacement job was submitted
    joins = [stamp for stamp, count in over_time[1:] if count == 2]
    left = min(entry["left"] for _, entry in drained)
    print(f"\nreplacement: {len(drained)} worker(s) drained; the replacement joined "
          f"{left - joins[0]:.0f} s before the first left; workers over time "
          f"{[count for _, count in over_time]}; items run twice: 0")


def test_max_pending_caps_the_worker_jobs_waiting_in_the_queue(slurm_cluster, batch_spec, adaptive_jobs,
                                                               tmp_path) -> None:
    # Started through the command line, as a user would.
    started = CliRunner().invoke(cli, [
        "up", "--adapt", "0:6", "--max-pending", "2", "--scheduler", "slurm", "--protocol", "tcp",
        "--ntasks-per-node", "1", "--mem-per-cpu", "700M", "--walltime", "10m", "--job-name", "hpcb-pend",
        "--interface", slurm_cluster.interface, "--python", sys.executable,
        "--scheduler-file", str(tmp_path / "{job_id}" / "scheduler.json"), "--scheduler-mem", "1G",
        "--adapt-interval", "1s", "--wait-count", "3", "--min-job-age", "20s", "--json"])
    assert started.exit_code == 0, started.output
    values = json.loads(started.output.strip().splitlines()[-1])
    job = jobs.SubmittedJob(values["job_id"], values["scheduler"], values["scheduler_file"])
    adaptive_jobs.append(("hpcb-pend", job))
    with hpcbridge.connect(job.scheduler_file, n_workers=0, timeout=120) as bridge:
        futures = bridge.client.map(time.sleep, [1.0] * 200, pure=False)  # the scheduler imports time
        most_pending = most_jobs = 0
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not (most_jobs == 5 and time.monotonic() > deadline - 25):
            pending = len(_workers(slurm_cluster, "hpcb-pend", "PENDING"))
            queued = len(_workers(slurm_cluster, "hpcb-pend"))
            most_pending, most_jobs = max(most_pending, pending), max(most_jobs, queued)
            time.sleep(0.2)
        # 3 run (the node is full), 2 wait; MAX 6 would otherwise queue 3.
        assert (most_pending, most_jobs) == (2, 5)
        shown = CliRunner().invoke(cli, ["status", job.job_id, "--scheduler", "slurm"])
        assert shown.exit_code == 0, shown.output
        pending_line = next(line for line in shown.output.splitlines() if "worker jobs pending" in line)
        # Both with Slurm's reason in words (the first waits for Resources, the next behind it for Priority).
        assert len(re.findall(r"\d+ \((Resources|Priority): [a-z ]+\)", pending_line)) == 2, shown.output
        assert "worker jobs running: " in shown.output and "at most 2 pending" in shown.output
        bridge.client.cancel(futures)
        del futures
        bridge.shutdown()
    assert wait_for(lambda: not _queue(slurm_cluster, "hpcb-pend"), timeout=60), _queue(slurm_cluster, "hpcb-pend")


def test_worker_jobs_that_fail_at_start_stop_the_cluster_adding_jobs_after_three(
        slurm_cluster, batch_spec, adaptive_jobs) -> None:
    job = _start(batch_spec, slurm_cluster, adaptive_jobs, "hpcb-fail", 1, 2,
                 worker_setup=["module load no-such-module/1.0"])
    assert wait_for(lambda: (adaptive.read_status(job.job_id, "slurm") or {}).get("stopped"), timeout=90)
    time.sleep(5)  # five more decisions: none may submit another job
    everything = slurm_cluster.run("scontrol", "show", "job", "-o").stdout.splitlines()
    worker_jobs = [line for line in everything if "JobName=hpcb-fail-worker " in line]
    assert len(worker_jobs) == 3 and all("JobState=FAILED" in line for line in worker_jobs)
    assert job.status().state == "RUNNING"  # the scheduler stays, to say why
    shown = CliRunner().invoke(cli, ["status", job.job_id, "--scheduler", "slurm"])
    assert shown.exit_code == 0, shown.output
    assert "adding no more worker jobs: 3 worker jobs failed at start" in shown.output
    assert "module: command not found" in shown.output  # the worker job's own last words
    log = Path(job.status().log).read_text()
    assert "adding no more worker jobs" in log and "failure 3 of 3" in log
    job.cancel()
    assert wait_for(lambda: not _queue(slurm_cluster, "hpcb-fail"), timeout=60)


def test_an_adaptive_cluster_starts_on_pbs_through_qsub(slurm_cluster, batch_spec, adaptive_jobs) -> None:
    """The scheduler job goes through the Torque wrappers' qsub; dask-jobqueue's PBSCluster submits the worker job."""
    spec = batch_spec(slurm_cluster, "pbs", pbs_flavor="torque", protocol="tcp", ntasks_per_node=1,
                      mem_per_cpu="700M", job_name="hpcb-pbs")
    job = adaptive.start(spec, 1, 1, **FAST)
    adaptive_jobs.append(("hpcb-pbs", job))
    with hpcbridge.connect(job.scheduler_file, n_workers=1, timeout=120) as bridge:
        assert bridge.gather(bridge.map(abs, range(-5, 0), progress=False)) == [5, 4, 3, 2, 1]
        assert len(_workers(slurm_cluster, "hpcb-pbs", "RUNNING")) == 1
        bridge.shutdown()
    assert wait_for(lambda: not _queue(slurm_cluster, "hpcb-pbs"), timeout=60), _queue(slurm_cluster, "hpcb-pbs")


def test_an_adaptive_cluster_speaks_tls_with_the_jobs_certificates(slurm_cluster, batch_spec, adaptive_jobs,
                                                                   tmp_path) -> None:
    """Scheduler and worker jobs present the spec's certificates; a client without them gets nothing."""
    import dask.config
    from distributed import Client

    from hpcbridge.tls import create_certificates

    made = create_certificates(tmp_path / "tls")
    spec = batch_spec(slurm_cluster, "slurm", protocol="tls", tls_ca_file=str(made.ca_file), tls_cert=str(made.cert),
                      tls_key=str(made.key), ntasks_per_node=1, mem_per_cpu="700M", job_name="hpcb-tls")
    job = adaptive.start(spec, 1, 1, **FAST)
    adaptive_jobs.append(("hpcb-tls", job))
    assert wait_for(lambda: Path(job.scheduler_file).exists(), timeout=120)
    address = json.loads(Path(job.scheduler_file).read_text())["address"]
    assert address.startswith("tls://")
    with pytest.raises((OSError, TypeError)):
        Client(address, timeout="3s", set_as_default=False)  # no certificates: refused
    with dask.config.set(made.dask_config()):
        with hpcbridge.connect(job.scheduler_file, n_workers=1, timeout=120) as bridge:
            assert bridge.gather(bridge.map(abs, range(-3, 0), progress=False)) == [3, 2, 1]
            assert all(w.startswith("tls://") for w in bridge.client.scheduler_info(n_workers=-1)["workers"])
            # The dashboard on the node's 127.0.0.1 (this machine's, on one node) opens with the token only.
            board = read_scheduler_file(job.scheduler_file).dashboard
            assert board.host == "127.0.0.1" and board.token
            curl = ["curl", "-s", "-L", "-b", "", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}"]
            assert subprocess.run([*curl, f"http://127.0.0.1:{board.port}/status"], capture_output=True, text=True,
                                  timeout=30).stdout == "403"
            assert subprocess.run([*curl, f"http://127.0.0.1:{board.port}/status?token={board.token}"],
                                  capture_output=True, text=True, timeout=30).stdout == "200"
            bridge.shutdown()
    assert wait_for(lambda: not _queue(slurm_cluster, "hpcb-tls"), timeout=60), _queue(slurm_cluster, "hpcb-tls")
    assert made.key.exists()  # certificates given in the spec are the user's: kept


# --- Without a cluster: the script and the settings -------------------------------------------

@pytest.mark.parametrize("scheduler", ["slurm", "pbs", "lsf"])
def test_the_scheduler_job_script_is_small_and_carries_the_worker_spec(scheduler, tmp_path) -> None:
    spec = JobSpec(scheduler=scheduler, protocol="tcp", ntasks_per_node=4, cpus_per_task=2, mem_per_cpu="1G",
                   walltime="2h", account="proj42", queue="compute", modules=("python/3.11",), interface="ib0",
                   setup=("source ~/venv/bin/activate",))
    script = adaptive.render_adaptive_script(spec, adaptive.AdaptiveSettings(minimum=0, maximum=8, max_pending=2))
    path = tmp_path / "adaptive.sh"
    path.write_text(script)
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    if shutil.which("shellcheck"):
        checked = subprocess.run(["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout
    assert "module load python/3.11" in script and "source ~/venv/bin/activate" in script
    assert "between 0 and 8 worker job(s)" in script and "at most 2 pending" in script
    if scheduler == "slurm":
        assert "#SBATCH --ntasks-per-node=1\n#SBATCH --cpus-per-task=1\n#SBATCH --mem=2048M\n" in script
        assert "#SBATCH --account=proj42" in script and "#SBATCH --time=02:00:00" in script
    worker_spec = next(line for line in script.splitlines() if line.startswith("WORKER_SPEC="))
    import shlex

    assert JobSpec(**json.loads(shlex.split(worker_spec.partition("=")[2])[0])) == spec


@pytest.mark.parametrize(("values", "field"), [
    ({"minimum": 3, "maximum": 1}, "adapt"), ({"maximum": 0}, "adapt"), ({"max_pending": 0}, "max_pending"),
    ({"idle_timeout": "soon"}, "idle_timeout"), ({"interval": 0}, "adapt_interval"),
    ({"scheduler_mem": "lots"}, "scheduler_mem"), ({"scheduler_walltime": "5s"}, "scheduler_walltime"),
    ({"replace_lead": "soon"}, "replace_lead"),
    ({"worker_setup": ["a\nb"]}, "worker_setup"), ({"failure_limit": 0}, "failure_limit"),
])
def test_bad_adaptive_settings_name_the_setting(values, field) -> None:
    with pytest.raises(SpecError) as caught:
        adaptive.AdaptiveSettings(**{"minimum": 0, "maximum": 2, **values})
    assert caught.value.field == field


def test_up_refuses_what_an_adaptive_cluster_cannot_run() -> None:
    runner = CliRunner()
    for arguments, words in ((["--adapt", "4", "--scheduler", "slurm"], "--adapt"),
                             (["--adapt", "1:2", "--scheduler", "local"], "Invalid value for '--scheduler'"),
                             (["--adapt", "1:2", "--scheduler", "slurm", "--mem", "1G", "--nodes", "2"],
                              "--nodes: 2 is not allowed; expected 1"),
                             (["--adapt", "1:2", "--scheduler", "slurm"], "--mem is missing: a memory size (--mem or "
                              "--mem-per-cpu)")):
        result = runner.invoke(cli, ["up", *arguments])
        assert result.exit_code == 2 and f"Error: {words}" in result.output, result.output
