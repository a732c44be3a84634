"""A cluster with no client and no task for --idle-timeout ends itself; its runs stay; status says why.

Real local jobs (the job script, the Dask scheduler with hpcbridge's preload, real workers).
The waits are bounded and generous; no assertion is on how fast anything happens.
"""

from __future__ import annotations

import json
import operator
import time
from pathlib import Path

from click.testing import CliRunner

from hpcbridge.cli import main
from hpcbridge.client.bridge import connect
from hpcbridge.cluster.idle_end import describe_seconds
from hpcbridge.job import submit as jobs
from tests.conftest import job_processes, wait_for

IDLE = 4  # seconds


def test_an_idle_cluster_ends_itself_keeps_its_runs_and_status_says_why(local_spec, local_jobs, tmp_path) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=1, idle_timeout=IDLE))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=1, timeout=60) as bridge:
        run = bridge.map(operator.neg, range(10), name="kept", chunk_size=5, progress=False)
        assert bridge.client.gather(run.futures) is not None
        time.sleep(3 * IDLE)  # a connected client keeps the cluster, however long it does nothing
        assert job.status().state == "RUNNING"
    assert wait_for(lambda: job.status().finished, timeout=IDLE + 60)
    assert (job.status().state, job.status().exit_code) == ("COMPLETED", 0)
    assert wait_for(lambda: not job_processes(job.job_id), timeout=30)
    assert list((tmp_path / "runs" / "kept").iterdir())  # its runs stay on disk

    shown = CliRunner().invoke(main, ["status", job.job_id])
    assert shown.exit_code == 0, shown.output
    assert f"COMPLETED (ended after {IDLE} s idle" in shown.output.splitlines()[0]
    as_json = json.loads(CliRunner().invoke(main, ["status", job.job_id, "--json"]).output)
    assert as_json["ended"].startswith(f"ended after {IDLE} s idle")


def test_a_task_keeps_the_cluster_after_its_client_left(local_spec, local_jobs, tmp_path) -> None:
    gate = tmp_path / "go"
    job = jobs.submit(local_spec(ntasks_per_node=1, idle_timeout=IDLE))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=1, timeout=60) as bridge:
        bridge.map(_after, [str(gate)], name="waits", chunk_size=1, progress=False)
    time.sleep(3 * IDLE)  # no client, but a task runs: the cluster stays
    assert job.status().state == "RUNNING"
    gate.touch()
    assert wait_for(lambda: job.status().finished, timeout=IDLE + 90)
    assert job.status().state == "COMPLETED"
    assert "ended after" in Path(job.status().log).read_text()


def test_idle_timeout_zero_is_never_and_bad_values_are_refused(local_spec) -> None:
    from hpcbridge.job.render import render_script
    from hpcbridge.job.spec import SpecError

    assert "idle_end" not in render_script(local_spec(idle_timeout="0"))
    assert "HPCBRIDGE_IDLE_TIMEOUT=1800" in render_script(local_spec())
    assert local_spec(idle_timeout="20s").idle_timeout == 20
    result = CliRunner().invoke(main, ["render", "--scheduler", "local", "--idle-timeout", "soon"])
    assert result.exit_code == 2 and "--idle-timeout" in result.output and "'soon'" in result.output
    try:
        local_spec(idle_timeout=-1)
    except SpecError as error:
        assert "idle_timeout" in str(error)
    else:
        raise AssertionError("a negative idle timeout was accepted")
    assert describe_seconds(1800) == "30 min"


def _after(gate: str) -> str:
    deadline = time.monotonic() + 120
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    return gate
