"""The PBS Pro flavour (the default ``--pbs-flavor``: ``select=`` chunks) on a real OpenPBS.

The cluster comes from tests/cluster/pbs-cluster: OpenPBS 23.06 with its server, scheduler and a
mom on node1 and a mom on node2 and node3, each node a network namespace with ib0. Its qsub,
qstat and qdel are the real ones (run in node1's namespaces), so the jobs, their ``qstat -x -f``
history, their exit codes and PBS's own words in ``comment`` are PBS's. One harness serves the
whole module.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcbridge.backends import JobNotFound, get_backend
from hpcbridge.cli import main as cli
from hpcbridge.client.attach import wait_for_scheduler_file
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.workloads.primes import split_range, sum_prime_factors
from tests.conftest import CLIENT_SCRIPT, wait_for


def _finish(job: jobs.SubmittedJob, timeout: float = 60) -> None:
    assert wait_for(lambda: job.status().finished, timeout=timeout), job.status()


def test_pbs_lives_in_the_nodes_namespaces_only(pbs_cluster) -> None:
    """The harness's overlays: each node has its own /etc/pbs.conf and PBS_HOME, the host none."""
    for path in ("/etc/pbs.conf", "/var/spool/pbs", "/opt/pbs"):
        assert not Path(path).exists(), path
    holder = (pbs_cluster.dir / "run" / "node2.hostpid").read_text().strip()
    inside = subprocess.run(["nsenter", "-t", holder, "-m", "-u", "sh", "-c", "hostname; cat /etc/pbs.conf"],
                            capture_output=True, text=True, timeout=30)
    assert inside.stdout.splitlines()[0] == "node2"
    assert "PBS_SERVER=node1" in inside.stdout and "PBS_START_SERVER=0" in inside.stdout
    nodes = pbs_cluster.run("pbsnodes", "-a").stdout
    assert [line.strip() for line in nodes.splitlines() if "state = " in line] == ["state = free"] * 3, nodes


def test_scheduler_file_cluster_over_three_moms(pbs_cluster, batch_spec, batch_jobs) -> None:
    """select=3:ncpus=2:mpiprocs=1 place=scatter: the scheduler on node1, a worker on each mom, the
    client on the host over the bridge; `connect JOB` and `logs JOB` from the command line."""
    cluster = pbs_cluster
    job = jobs.submit(batch_spec(cluster, "pbs", nodes=3, ntasks_per_node=1, cpus_per_task=2, mem="600M",
                                 job_name="pbs-pro"))
    batch_jobs.append(job)
    with connect(job.scheduler_file, n_workers=3, timeout=120) as bridge:
        assert bridge.client.scheduler.address.startswith(f"tls://{cluster.node_addresses[0]}:")
        workers = bridge.client.scheduler_info(n_workers=-1)["workers"]
        hosts = sorted(address.split("//")[1].rsplit(":", 1)[0] for address in workers)
        assert hosts == sorted(cluster.node_addresses)
        assert sorted(bridge.client.run(socket.gethostname).values()) == sorted(cluster.nodes)
        assert {w["nthreads"] for w in workers.values()} == {2}  # from PBS's NCPUS
        total = sum(bridge.gather(bridge.map(sum_prime_factors, split_range(2, 10_000, 12))))
        assert total == 10218029
        status = job.status()
        assert status.state == "RUNNING", status
        shown = CliRunner().invoke(cli, ["connect", job.job_id, "--scheduler", "pbs", "--workers", "3",
                                         "--timeout", "60"])
        assert shown.exit_code == 0, shown.output
        assert f"job:       {job.job_id} (pbs)" in shown.output and "workers:   3 (6 threads)" in shown.output
        bridge.shutdown()
    _finish(job)
    status = job.status()
    assert (status.state, status.exit_code) == ("COMPLETED", 0), Path(status.log).read_text()
    logs = CliRunner().invoke(cli, ["logs", job.job_id, "--scheduler", "pbs"])
    assert logs.exit_code == 0, logs.output
    assert "hpcbridge: the scheduler exited (status 0)" in logs.output


def test_exit_codes_come_from_the_history(pbs_cluster, batch_jobs, tmp_path, monkeypatch) -> None:
    """`qstat -x -f` keeps a finished job: Exit_status 7 is FAILED with exit code 7, 0 COMPLETED."""
    monkeypatch.chdir(tmp_path)
    backend = get_backend("pbs")
    failing = backend.submit("#!/bin/bash\necho about to fail\nexit 7\n")
    passing = backend.submit("#!/bin/bash\ntrue\n")
    batch_jobs.extend(jobs.SubmittedJob(job_id, "pbs", None) for job_id in (failing, passing))
    assert wait_for(lambda: backend.status(failing).finished and backend.status(passing).finished, timeout=60)
    failed = backend.status(failing)
    assert (failed.state, failed.exit_code) == ("FAILED", 7), failed
    assert "about to fail" in Path(failed.log).read_text()
    assert (backend.status(passing).state, backend.status(passing).exit_code) == ("COMPLETED", 0)
    with pytest.raises(JobNotFound):
        backend.status("99999.node1")


def test_a_waiting_job_says_why_in_pbs_words_and_cancel_ends_both(pbs_cluster, batch_spec, batch_jobs) -> None:
    """Every ncpus taken: the second job waits with PBS's comment as its reason; `cancel` of a
    running and of a queued job both end as CANCELLED (PBS Pro has no such state of its own)."""
    first = jobs.submit(batch_spec(pbs_cluster, "pbs", nodes=3, ntasks_per_node=1, cpus_per_task=2,
                                   mem="300M", job_name="fills"))
    batch_jobs.append(first)
    second = jobs.submit(batch_spec(pbs_cluster, "pbs", mem="300M", job_name="waits"))
    batch_jobs.append(second)
    wait_for_scheduler_file(first.scheduler_file, timeout=60)
    assert wait_for(lambda: second.status().reason is not None, timeout=30), second.status()
    waiting = second.status()
    assert waiting.state == "PENDING"
    assert waiting.reason in ("Not Running: Not enough free nodes available",  # place=scatter
                              "Not Running: Insufficient amount of resource: ncpus"), waiting.reason
    shown = CliRunner().invoke(cli, ["status", second.job_id, "--scheduler", "pbs"])
    assert f"{second.job_id}: PENDING" in shown.output and f"reason: {waiting.reason}" in shown.output
    cancelled = CliRunner().invoke(cli, ["cancel", second.job_id, "--scheduler", "pbs"])
    assert cancelled.exit_code == 0, cancelled.output
    assert wait_for(lambda: second.status().finished, timeout=30)
    assert second.status().state == "CANCELLED", second.status()
    first.cancel()
    assert wait_for(lambda: first.status().finished, timeout=60)
    assert first.status().state == "CANCELLED", first.status()


def test_dask_mpi_over_three_moms_runs_the_client_script(pbs_cluster, batch_spec, batch_jobs, tmp_path) -> None:
    """mpi mode: mpiexec over $PBS_NODEFILE (the site's tm launcher), rank 0 the scheduler on node1,
    rank 1 the client script, the other ranks workers on node2 and node3."""
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    report = tmp_path / "report.json"
    job = jobs.submit(batch_spec(pbs_cluster, "pbs", mode="mpi", nodes=3, ntasks_per_node=2, cpus_per_task=1,
                                 mem="900M", client_script=str(script), client_args=(str(report),)))
    batch_jobs.append(job)
    _finish(job, timeout=120)
    status = job.status()
    assert (status.state, status.exit_code) == ("COMPLETED", 0), Path(status.log).read_text()
    seen = json.loads(report.read_text())
    assert (seen["total"], seen["workers"]) == (10218029, 4)


def test_walltime_kill_is_a_timeout(pbs_cluster, batch_jobs, tmp_path, monkeypatch) -> None:
    """The mom kills a job past its walltime: Exit_status -29 (JOB_EXEC_KILL_WALLTIME) is TIMEOUT."""
    monkeypatch.chdir(tmp_path)
    backend = get_backend("pbs")
    job_id = backend.submit("#!/bin/bash\n#PBS -l walltime=00:00:03\nsleep 120\n")
    batch_jobs.append(jobs.SubmittedJob(job_id, "pbs", None))
    assert wait_for(lambda: backend.status(job_id).finished, timeout=60), backend.status(job_id)
    ended = backend.status(job_id)
    assert (ended.state, ended.exit_code) == ("TIMEOUT", -29), ended
    assert "JOB_EXEC_KILL_WALLTIME" in ended.reason


def test_array_with_a_throttle_runs_every_element(pbs_cluster, batch_jobs, tmp_path, monkeypatch) -> None:
    """`#PBS -J 1-4` and `-W max_run_subjobs=2`: each subjob gets its PBS_ARRAY_INDEX, never more
    than two run at once, and the array's history says it completed."""
    from hpcbridge.job.spec import JobSpec
    from tests.cluster.test_arrays import ELEMENT_SCRIPT, most_at_once

    monkeypatch.chdir(tmp_path)
    script, results = tmp_path / "element.py", tmp_path / "results"
    script.write_text(ELEMENT_SCRIPT)
    results.mkdir()
    spec = JobSpec(scheduler="pbs", mode="array", array="1-4", array_throttle=2, mem_per_cpu="100M",
                   walltime="10m", python=sys.executable, client_script=str(script), client_args=(str(results), "x y"))
    job = jobs.submit(spec)
    batch_jobs.append(job)
    assert job.job_id.endswith("[].node1"), job.job_id
    assert wait_for(lambda: len(list(results.glob("element-*.json"))) == 4, timeout=90)
    _finish(job)
    assert job.status().state == "COMPLETED", job.status()
    records = [json.loads(path.read_text()) for path in results.glob("element-*.json")]
    assert sorted(r["index"] for r in records) == [1, 2, 3, 4]
    assert all(r["argv"] == ["x y"] for r in records)
    assert most_at_once(records) <= 2


def test_many_jobs_are_asked_about_in_one_qstat_also_when_one_has_ended(pbs_cluster, batch_jobs, tmp_path,
                                                                          monkeypatch) -> None:
    """PBS Pro's `qstat -f a b c` lists the waiting and running jobs but exits 35 for one that has
    ended: those listed still count, and only the ended one is asked again (with -x). The commands
    run for real; a wrapper around run_command counts them."""
    from hpcbridge.backends import base
    from hpcbridge.backends import pbs as pbs_backend

    monkeypatch.chdir(tmp_path)
    backend = get_backend("pbs")
    quick = backend.submit("#!/bin/bash\ntrue\n")
    sleepers = [backend.submit("#!/bin/bash\nsleep 120\n") for _ in range(2)]
    batch_jobs.extend(jobs.SubmittedJob(job_id, "pbs", None) for job_id in [quick, *sleepers])
    assert wait_for(lambda: backend.status(quick).finished, timeout=60)
    asked: list[list[str]] = []

    def counted(command, *args, **kwargs):
        asked.append(list(command))
        return base.run_command(command, *args, **kwargs)

    monkeypatch.setattr(pbs_backend, "run_command", counted)
    found = base.statuses(backend, [quick, *sleepers])
    assert [command for command in asked if any(job_id in command for job_id in sleepers)] == [
        ["qstat", "-f", quick, *sleepers]], asked
    assert found[quick].state == "COMPLETED"
    assert {found[job_id].state for job_id in sleepers} <= {"PENDING", "RUNNING"}
