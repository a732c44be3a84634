"""Rendered scheduler-file scripts on a real Slurm: sbatch, attach through the file, compute, end.

The cluster comes from tests/cluster/slurm-cluster: one node on loopback, or three nodes in
network namespaces whose interface is ib0, so the Dask scheduler, the workers and the client on
this host talk over real (virtual) network links.
"""

from __future__ import annotations

import json
import operator
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hpcbridge import scheduler_file as files
from hpcbridge.backends import BatchCommandError
from hpcbridge.client.attach import wait_for_scheduler_file
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.workloads.primes import split_range, sum_prime_factors
from tests.conftest import CLIENT_SCRIPT, wait_for


def _finish(job: jobs.SubmittedJob) -> None:
    assert wait_for(lambda: job.status().finished, timeout=60), job.status()
    status = job.status()
    assert (status.state, status.exit_code) == ("COMPLETED", 0), Path(status.log).read_text()


def test_one_node_job_runs_dask_until_the_client_shuts_it_down(slurm_cluster, batch_spec, batch_jobs) -> None:
    job = jobs.submit(batch_spec(slurm_cluster, "slurm", ntasks_per_node=2, cpus_per_task=1, mem_per_cpu="300M",
                                 job_name="one-node"))
    batch_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=120) as bridge:
        status = job.status()
        assert status.state == "RUNNING"
        assert status.log == str(Path.cwd() / f"one-node-{job.job_id}.out")
        workers = bridge.client.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(w["nthreads"] for w in workers) == [1, 1]
        assert {w["memory_limit"] for w in workers} == {262 * 2**20}  # (600 MiB less 1/8 for the scheduler) / 2
        assert bridge.client.scheduler.address.startswith("tls://127.0.0.1:")  # TLS, the default
        weights = bridge.broadcast(np.full(10_000, 2.0))
        results = bridge.gather(bridge.map(operator.mul, range(8), args=(weights,)))
        assert [float(r.sum()) for r in results] == [20_000.0 * i for i in range(8)]
        bridge.shutdown()
    _finish(job)
    log = Path(job.status().log).read_text()
    assert "hpcbridge: the scheduler exited (status 0)" in log
    assert not Path(job.scheduler_file).exists()


def test_the_job_runs_on_bash_42(slurm_cluster, batch_spec, batch_jobs, monkeypatch) -> None:
    """sbatch passes BASH_ENV on: the batch script and its steps run with bash 5's newer parts refused."""
    from tests.test_bash42 import bash42_environment

    for key, value in bash42_environment().items():
        monkeypatch.setenv(key, value)
    job = jobs.submit(batch_spec(slurm_cluster, "slurm", ntasks_per_node=2, mem_per_cpu="300M", job_name="bash42"))
    batch_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=120) as bridge:
        assert bridge.gather(bridge.map(operator.neg, range(50))) == [-i for i in range(50)]
        bridge.shutdown()
    _finish(job)
    log = Path(job.status().log).read_text()
    assert "invalid option" not in log and "unbound variable" not in log
    assert "hpcbridge: the scheduler exited (status 0)" in log


def test_pending_job_says_why_and_cancel_ends_it(slurm_cluster, batch_spec, batch_jobs) -> None:
    cpus = int(slurm_cluster.run("sinfo", "-h", "-o", "%c").stdout.split()[0])
    first = jobs.submit(batch_spec(slurm_cluster, "slurm", ntasks_per_node=cpus, mem_per_cpu="100M", job_name="fills-node"))
    batch_jobs.append(first)
    second = jobs.submit(batch_spec(slurm_cluster, "slurm", mem_per_cpu="100M", job_name="waits"))
    batch_jobs.append(second)
    wait_for_scheduler_file(first.scheduler_file, timeout=60)
    assert wait_for(lambda: second.status().reason is not None, timeout=30)
    waiting = second.status()
    assert waiting.state == "PENDING"
    assert waiting.reason == "Resources: waiting for nodes to become free"
    first.cancel()
    assert wait_for(lambda: first.status().state == "CANCELLED", timeout=60)
    with connect(second.scheduler_file, n_workers=1, timeout=120) as bridge:
        bridge.shutdown()
    _finish(second)


def test_sbatch_refusal_reaches_the_user_with_slurms_words(slurm_cluster, batch_spec) -> None:
    with pytest.raises(BatchCommandError) as refused:
        jobs.submit(batch_spec(slurm_cluster, "slurm", queue="no-such-partition"))
    assert refused.value.command == ["sbatch", "--parsable"]
    assert refused.value.returncode != 0
    assert "invalid partition" in refused.value.stderr.lower()
    assert "no-such-partition" in str(refused.value)


def test_three_namespace_nodes_over_ib0(slurm_cluster_3nodes, batch_spec, batch_jobs) -> None:
    cluster = slurm_cluster_3nodes
    job = jobs.submit(batch_spec(cluster, "slurm", nodes=3, ntasks_per_node=1, cpus_per_task=2, mem="600M"))
    batch_jobs.append(job)
    with connect(job.scheduler_file, n_workers=3, timeout=120) as bridge:
        assert bridge.client.scheduler.address.startswith(f"tls://{cluster.node_addresses[0]}:")
        workers = bridge.client.scheduler_info(n_workers=-1)["workers"]
        hosts = sorted(address.split("//")[1].rsplit(":", 1)[0] for address in workers)
        assert hosts == sorted(cluster.node_addresses)
        assert sorted(bridge.client.run(socket.gethostname).values()) == sorted(cluster.nodes)
        assert {w["nthreads"] for w in workers.values()} == {2}
        assert {w["memory_limit"] for w in workers.values()} == {525 * 2**20}  # 600 MiB less 1/8 for the scheduler
        total = sum(bridge.gather(bridge.map(sum_prime_factors, split_range(2, 10_000, 12))))
        assert total == 10218029
        bridge.shutdown()
    _finish(job)


def test_dask_mpi_job_runs_the_client_script_on_rank_one(slurm_cluster, batch_spec, batch_jobs, tmp_path) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    report = tmp_path / "report.json"
    job = jobs.submit(batch_spec(slurm_cluster, "slurm", mode="mpi", ntasks_per_node=4, mem_per_cpu="700M",
                                 client_script=str(script), client_args=(str(report), "two words")))
    batch_jobs.append(job)
    _finish(job)
    assert json.loads(report.read_text()) == {
        "argv": [str(report), "two words"], "workers": 2, "total": 10218029, "nthreads": [1, 1]}
    log = Path(job.status().log).read_text()
    assert "Traceback" not in log, log[max(0, log.find("Traceback") - 2000):][:5000]


def test_dask_mpi_job_without_client_serves_an_outside_client_across_nodes(
    slurm_cluster_3nodes, batch_spec, batch_jobs
) -> None:
    cluster = slurm_cluster_3nodes
    job = jobs.submit(batch_spec(cluster, "slurm", mode="mpi", nodes=3, ntasks_per_node=1, cpus_per_task=2, mem="500M"))
    batch_jobs.append(job)
    with connect(job=job, n_workers=2, timeout=120) as bridge:  # refused were the file not this job's
        assert bridge.client.scheduler.address.startswith(f"tls://{cluster.node_addresses[0]}:")
        published = files.read(job.scheduler_file)
        assert (published.job_id, published.scheduler) == (job.job_id, "slurm") and published.cluster
        worker_hosts = sorted(a.split("//")[1].rsplit(":", 1)[0] for a in bridge.client.nthreads())
        assert worker_hosts == sorted(cluster.node_addresses[1:])
        assert set(bridge.client.nthreads().values()) == {2}
        assert bridge.gather(bridge.map(abs, [-1, -2, -3])) == [1, 2, 3]
        # The dashboard: on node1's 127.0.0.1, for a browser that brings the job's token only.
        board = published.dashboard
        assert (board.node, board.host) == ("node1", "127.0.0.1") and board.token
        on_node1 = ["nsenter", f"--net=/run/netns/{cluster.netns[0]}", "curl", "-s", "-L", "-b", "", "-m", "10",
                    "-o", "/dev/null", "-w", "%{http_code}"]
        assert subprocess.run([*on_node1, f"http://127.0.0.1:{board.port}/status"], capture_output=True, text=True,
                              timeout=30).stdout == "403"
        assert subprocess.run([*on_node1, f"http://127.0.0.1:{board.port}/status?token={board.token}"],
                              capture_output=True, text=True, timeout=30).stdout == "200"
        bridge.shutdown()
    _finish(job)


def _failed_naming_ib7(job: jobs.SubmittedJob) -> str:
    """Wait for the job to fail for want of ib7 on node1; return its log."""
    assert wait_for(lambda: job.status().finished, timeout=60)
    status = job.status()
    assert status.state == "FAILED"
    log = Path(status.log).read_text()
    assert "hpcbridge: network interface ib7 does not exist on node1; it has: lo" in log
    return log


def test_a_missing_interface_fails_the_job_naming_the_interfaces_there(slurm_cluster, batch_spec, batch_jobs) -> None:
    job = jobs.submit(batch_spec(slurm_cluster, "slurm", interface="ib7"))
    batch_jobs.append(job)
    log = _failed_naming_ib7(job)
    assert "distributed.cli.dask_scheduler" not in log and "Dask scheduler" not in log.split("ib7 does not")[0]


def test_dask_mpi_checks_the_workers_interface_on_every_node_before_starting(slurm_cluster, batch_spec,
                                                                              batch_jobs) -> None:
    job = jobs.submit(batch_spec(slurm_cluster, "slurm", mode="mpi", ntasks_per_node=3, interface="ib7",
                                 scheduler_interface=slurm_cluster.interface))
    batch_jobs.append(job)
    log = _failed_naming_ib7(job)
    assert "hpcbridge.cluster.mpi_job" not in log and "distributed" not in log


def test_a_script_follows_the_allocation_sbatch_gives_it(slurm_cluster_3nodes, batch_spec, batch_jobs,
                                                          tmp_path) -> None:
    """`sbatch -N 2 -c 2` of a script rendered for 1 node x 1 CPU: 2 nodes of 2-thread workers."""
    from hpcbridge.job.render import write_script

    cluster = slurm_cluster_3nodes
    spec = batch_spec(cluster, "slurm", nodes=1, ntasks_per_node=1, cpus_per_task=1, mem_per_cpu="200M")
    script = write_script(spec, tmp_path / "dask.sh")
    job_id = cluster.sbatch("-N", "2", "-c", "2", str(script))
    job = jobs.SubmittedJob(job_id, "slurm", spec.scheduler_file_for(job_id))
    batch_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=120) as bridge:
        workers = bridge.client.scheduler_info(n_workers=-1)["workers"]
        hosts = {address.split("//")[1].rsplit(":", 1)[0] for address in workers}
        assert len(workers) == 2 and len(hosts) == 2 and hosts <= set(cluster.node_addresses)
        assert {w["nthreads"] for w in workers.values()} == {2}
        assert {w["memory_limit"] for w in workers.values()} == {350 * 2**20}  # 2 x 200 MiB less 1/8
        bridge.shutdown()
    _finish(job)
