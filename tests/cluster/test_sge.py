"""``--scheduler sge`` on a real Son of Grid Engine 8.1.9.

The cluster comes from tests/cluster/sge-cluster: Debian's gridengine packages (overlaid on /usr in
each node's own mount namespace), the qmaster and an execd on node1 and an execd on node2, each node
a network namespace with ib0, two slots each. Its qsub, qstat, qacct and qdel are the real ones (run
in node1's namespaces), so the jobs' states, scheduling info, accounting records and exit codes are
Grid Engine's. One harness serves the whole module.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcbridge.backends import JobNotFound, get_backend
from hpcbridge.cli import main as cli
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.workloads.primes import split_range, sum_prime_factors
from tests.conftest import CLIENT_SCRIPT, wait_for


def _finish(job: jobs.SubmittedJob, timeout: float = 60) -> None:
    assert wait_for(lambda: job.status().finished, timeout=timeout), job.status()


def test_scheduler_file_cluster_over_both_hosts(sge_cluster, batch_spec, batch_jobs) -> None:
    """`-pe mpi 4` ($fill_up over two 2-slot hosts): the scheduler on the master host, a worker started with
    `qrsh -inherit` on each host, the client on the host over TLS; Grid Engine read our directives
    (qstat -j); `connect JOB` and `logs JOB` from the command line; exit code 0 from qacct."""
    cluster = sge_cluster
    job = jobs.submit(batch_spec(cluster, "sge", nodes=2, ntasks_per_node=1, cpus_per_task=2, mem_per_cpu="300M",
                                 pe="mpi", job_name="sge-dask"))
    batch_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=120) as bridge:
        # the scheduler runs where Grid Engine starts the job script: the master host it picked, either node
        assert bridge.client.scheduler.address.split("//")[1].rsplit(":", 1)[0] in cluster.node_addresses
        assert bridge.client.scheduler.address.startswith("tls://")
        workers = bridge.client.scheduler_info(n_workers=-1)["workers"]
        hosts = sorted(address.split("//")[1].rsplit(":", 1)[0] for address in workers)
        assert hosts == sorted(cluster.node_addresses)
        assert sorted(bridge.client.run(socket.gethostname).values()) == sorted(cluster.nodes)
        assert {w["nthreads"] for w in workers.values()} == {2}
        total = sum(bridge.gather(bridge.map(sum_prime_factors, split_range(2, 10_000, 12))))
        assert total == 10218029
        status = job.status()
        assert status.state == "RUNNING", status
        parsed = cluster.run("qstat", "-j", job.job_id).stdout
        assert "job_name:                   sge-dask" in parsed
        assert "parallel environment:  mpi range: 4" in parsed
        assert "h_rt=600" in parsed and "mem_free=300M" in parsed, parsed
        shown = CliRunner().invoke(cli, ["connect", job.job_id, "--scheduler", "sge", "--workers", "2",
                                         "--timeout", "60"])
        assert shown.exit_code == 0, shown.output
        assert f"job:       {job.job_id} (sge)" in shown.output and "workers:   2 (4 threads)" in shown.output
        bridge.shutdown()
    _finish(job)
    status = job.status()
    assert (status.state, status.exit_code) == ("COMPLETED", 0), Path(status.log).read_text()
    logs = CliRunner().invoke(cli, ["logs", job.job_id, "--scheduler", "sge"])
    assert logs.exit_code == 0, logs.output
    assert "hpcbridge: the scheduler exited (status 0)" in logs.output


def test_exit_codes_and_walltime_kills_come_from_qacct(sge_cluster, batch_jobs, tmp_path, monkeypatch) -> None:
    """A job Grid Engine no longer lists is read from its accounting: exit 7 is FAILED with exit code 7,
    and a job killed past its h_rt (qacct's failed 37) is TIMEOUT, in Grid Engine's words."""
    monkeypatch.chdir(tmp_path)
    backend = get_backend("sge")
    failing = backend.submit("#!/bin/bash\n#$ -S /bin/bash\necho about to fail\nexit 7\n")
    passing = backend.submit("#!/bin/bash\n#$ -S /bin/bash\ntrue\n")
    too_long = backend.submit("#!/bin/bash\n#$ -S /bin/bash\n#$ -l h_rt=0:0:2\nsleep 120\n")
    submitted = [failing, passing, too_long]
    batch_jobs.extend(jobs.SubmittedJob(job_id, "sge", None) for job_id in submitted)
    assert wait_for(lambda: all(backend.status(job_id).finished for job_id in submitted), timeout=60)
    failed = backend.status(failing)
    assert (failed.state, failed.exit_code) == ("FAILED", 7), failed
    assert "qacct exit_status 7" in failed.reason
    assert "about to fail" in Path(failed.log).read_text()
    assert (backend.status(passing).state, backend.status(passing).exit_code) == ("COMPLETED", 0)
    ended = backend.status(too_long)
    assert ended.state == "TIMEOUT", ended
    assert "qacct failed 37" in ended.reason and "h_rt" in ended.reason
    with pytest.raises(JobNotFound):
        backend.status("99999")


def test_a_waiting_job_says_why_and_cancel_ends_both(sge_cluster, batch_spec, batch_jobs, tmp_path) -> None:
    """Every slot taken: the Dask job waits with Grid Engine's scheduling info as its reason;
    `cancel` of a waiting and of a running job both end as CANCELLED."""
    backend = get_backend("sge")
    started = tmp_path / "filler-started"
    filler = backend.submit(f"#!/bin/bash\n#$ -S /bin/bash\n#$ -pe mpi 4\ntouch {started}\nsleep 300\n")
    first = jobs.SubmittedJob(filler, "sge", None)
    batch_jobs.append(first)
    # Its script runs (qstat's RUNNING includes "t", still transferring: a job deleted then never ran,
    # and Grid Engine writes no accounting record for it).
    assert wait_for(started.exists, timeout=30), first.status()
    second = jobs.submit(batch_spec(sge_cluster, "sge", mem_per_cpu="200M", job_name="waits"))
    batch_jobs.append(second)
    assert wait_for(lambda: second.status().reason is not None, timeout=30), second.status()
    waiting = second.status()
    assert waiting.state == "PENDING"
    assert "dropped because it is full" in waiting.reason, waiting.reason
    shown = CliRunner().invoke(cli, ["status", second.job_id, "--scheduler", "sge"])
    assert f"{second.job_id}: PENDING" in shown.output and "dropped because it is full" in shown.output
    cancelled = CliRunner().invoke(cli, ["cancel", second.job_id, "--scheduler", "sge"])
    assert cancelled.exit_code == 0, cancelled.output
    assert wait_for(lambda: second.status().finished, timeout=30)
    assert second.status().state == "CANCELLED", second.status()
    first.cancel()
    assert wait_for(lambda: first.status().finished, timeout=60)
    ended = first.status()
    assert ended.state == "CANCELLED" and "qacct failed 100" in ended.reason, ended


def test_dask_mpi_over_both_hosts_runs_the_client_script(sge_cluster, batch_spec, batch_jobs, tmp_path) -> None:
    """mpi mode: Open MPI reads $PE_HOSTFILE and starts its ranks with qrsh -inherit; rank 0 the
    scheduler, rank 1 the client script, the other two ranks workers."""
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    report = tmp_path / "report.json"
    job = jobs.submit(batch_spec(sge_cluster, "sge", mode="mpi", nodes=2, ntasks_per_node=2, cpus_per_task=1,
                                 pe="mpi", mem_per_cpu="300M", client_script=str(script), client_args=(str(report),)))
    batch_jobs.append(job)
    _finish(job, timeout=120)
    status = job.status()
    assert (status.state, status.exit_code) == ("COMPLETED", 0), Path(status.log).read_text()
    seen = json.loads(report.read_text())
    assert (seen["total"], seen["workers"]) == (10218029, 2)


def test_array_with_a_throttle_runs_every_element(sge_cluster, batch_jobs, tmp_path, monkeypatch) -> None:
    """`#$ -t 1-4` and `-tc 2`: each task gets its SGE_TASK_ID, never more than two run at once, and
    the array's accounting says it completed."""
    from hpcbridge.job.spec import JobSpec
    from tests.cluster.test_arrays import ELEMENT_SCRIPT, most_at_once

    monkeypatch.chdir(tmp_path)
    script, results = tmp_path / "element.py", tmp_path / "results"
    script.write_text(ELEMENT_SCRIPT)
    results.mkdir()
    spec = JobSpec(scheduler="sge", mode="array", array="1-4", array_throttle=2, mem_per_cpu="100M",
                   walltime="10m", python=sys.executable, client_script=str(script), client_args=(str(results), "x y"))
    job = jobs.submit(spec)
    batch_jobs.append(job)
    assert wait_for(lambda: len(list(results.glob("element-*.json"))) == 4, timeout=90)
    _finish(job)
    assert job.status().state == "COMPLETED", job.status()
    records = [json.loads(path.read_text()) for path in results.glob("element-*.json")]
    assert sorted(r["index"] for r in records) == [1, 2, 3, 4]
    assert all(r["argv"] == ["x y"] for r in records)
    assert most_at_once(records) <= 2
    assert len(list(tmp_path.glob("sge-*.out"))) == 4  # one output file per task ($TASK_ID in -o)


def test_an_adaptive_cluster_submits_its_worker_job_through_qsub(sge_cluster, batch_spec, batch_jobs) -> None:
    """hpcbridge up --adapt on Grid Engine: the scheduler job goes through qsub, dask-jobqueue's SGECluster
    submits a worker job (`-pe smp 2`, mem_free per slot) from inside it, asked about with one qstat; a map runs."""
    import hpcbridge
    from hpcbridge.job import adaptive

    spec = batch_spec(sge_cluster, "sge", protocol="tcp", ntasks_per_node=1, cpus_per_task=2, pe="smp",
                      mem_per_cpu="350M", job_name="hpcb-sge-adapt")
    job = adaptive.start(spec, 1, 1, interval=1, wait_count=3, min_job_age=20, scheduler_mem="1G", idle_timeout="10m")
    batch_jobs.append(job)
    with hpcbridge.connect(job.scheduler_file, n_workers=1, timeout=120) as bridge:
        assert bridge.gather(bridge.map(abs, range(-5, 0), progress=False)) == [5, 4, 3, 2, 1]
        listed = sge_cluster.run("qstat", "-u", "*").stdout
        worker_jobs = [line.split()[0] for line in listed.splitlines() if " hpcb-sge-a" in line and line.split()[0] != job.job_id]
        assert len(worker_jobs) == 1, listed
        parsed = sge_cluster.run("qstat", "-j", worker_jobs[0]).stdout
        assert "parallel environment:  smp range: 2" in parsed and "mem_free=350M" in parsed, parsed
        bridge.shutdown()
    _finish(job)
    assert wait_for(lambda: " hpcb-sge-a" not in sge_cluster.run("qstat", "-u", "*").stdout, timeout=60)
