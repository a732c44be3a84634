"""``--scheduler ssh --hostfile``: workers started over real ssh on two hosts (sshd in the nodes' namespaces).

The harness's two-node network gives two namespaces with ``ib0`` addresses; an sshd runs in each
(tests/cluster/sshd.py). The ssh scheduler's script and scheduler run on the host, listening on
the bridge the namespaces reach; the workers run inside the namespaces, started by ``ssh -F <the
test's config>`` with the test's own keys. A Slurm job on the same nodes shows the dashboard's
ssh tunnel: its owner reaches the dashboard through the node's sshd, another user reaches nothing.
"""

from __future__ import annotations

import json
import operator
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest

from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.job.spec import JobSpec
from tests.cluster.conftest import SlurmCluster, running_cluster
from tests.cluster.sshd import SSHHosts, command_line, netns_inode, process_netns_inode, running_sshd
from tests.conftest import job_processes, wait_for
from tests.test_security import other_user  # noqa: F401  (a second Unix user for the module, removed after it)


@pytest.fixture(scope="module")
def two_hosts() -> Iterator[tuple[SlurmCluster, SSHHosts]]:
    with running_cluster(2) as cluster, running_sshd(cluster.node_addresses, cluster.netns) as hosts:
        yield cluster, hosts


@pytest.fixture
def ssh_spec(two_hosts, tmp_path: Path):
    cluster, hosts = two_hosts

    def make(lines: list[str], **values) -> JobSpec:
        hostfile = tmp_path / "hosts.txt"
        hostfile.write_text("# the seed's host list: one host per line\n" + "".join(f"{line}\n" for line in lines))
        values = {"interface": "ib0", "scheduler_interface": cluster.bridge, "ssh_options": ("-F", str(hosts.config)),
                  "python": sys.executable, "scheduler_file": str(tmp_path / "{job_id}" / "scheduler.json"), **values}
        return JobSpec(scheduler="ssh", hostfile=str(hostfile), **values)

    return make


@pytest.fixture
def ssh_jobs() -> Iterator[list]:
    submitted: list = []
    yield submitted
    for job in submitted:
        if not job.status().finished:
            job.cancel()
        assert wait_for(lambda: job.status().finished, timeout=30), f"job {job.job_id} did not end"


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpcbridge.cli", *argv], capture_output=True, text=True, timeout=60)


def test_workers_on_both_hosts_compute_and_cancel_ends_every_remote_process(two_hosts, ssh_jobs, tmp_path: Path) -> None:
    cluster, hosts = two_hosts
    first, second = cluster.node_addresses
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text(f"# the seed's host list\n{first}\n{second}\n{second}\n")  # a repeat: two workers there
    submitted = cli("submit", "--scheduler", "ssh", "--hostfile", str(hostfile), "--ssh-options", f"-F {hosts.config}",
                    "--interface", "ib0", "--scheduler-interface", cluster.bridge, "--python", sys.executable,
                    "--scheduler-file", str(tmp_path / "{job_id}" / "scheduler.json"), "--json")
    assert submitted.returncode == 0, submitted.stderr
    job = jobs.find(json.loads(submitted.stdout)["job_id"])
    ssh_jobs.append(job)
    assert job.job_id.startswith("ssh-") and job.scheduler == "ssh"
    with connect(job.scheduler_file, n_workers=3, timeout=90, job=job) as bridge:
        workers = bridge.client.scheduler_info(n_workers=-1)["workers"]
        assert Counter(address.split("://")[1].rsplit(":", 1)[0] for address in workers) == {first: 1, second: 2}
        assert all(address.startswith("tls://") for address in workers)  # the per-job certificates
        assert bridge.gather(bridge.map(operator.mul, range(254), range(254))) == [x * x for x in range(254)]
        assert json.loads(cli("status", job.job_id, "--json").stdout)["state"] == "RUNNING"

    remote = {pid: namespace for pid, namespace in hosts.descendants().items() 
              if command_line(pid).split()[1:3] == ["-m", "distributed.cli.dask_worker"]}
    assert Counter(remote.values()) == {cluster.netns[0]: 1, cluster.netns[1]: 2}
    for pid, namespace in remote.items():
        assert process_netns_inode(pid) == netns_inode(namespace)
    under_sshd = set(hosts.descendants())
    assert set(remote) <= set(job_processes(job.job_id))  # the workers carry the job's variables

    assert "scheduler file ready" in cli("logs", job.job_id).stdout
    cancelled = cli("cancel", job.job_id)
    assert cancelled.returncode == 0 and f"cancelled {job.job_id}" in cancelled.stdout, cancelled.stderr
    assert wait_for(lambda: not (under_sshd & set(hosts.descendants())), timeout=30), \
        f"left on the hosts: {[command_line(pid) for pid in under_sshd & set(hosts.descendants())]}"
    assert wait_for(lambda: job.status().state == "CANCELLED", timeout=30)
    assert wait_for(lambda: not job_processes(job.job_id), timeout=15)
    assert not Path(job.scheduler_file).exists()


def test_shutdown_by_the_client_ends_the_job_cleanly_on_every_host(two_hosts, ssh_spec, ssh_jobs) -> None:
    cluster, hosts = two_hosts
    job = jobs.submit(ssh_spec(cluster.node_addresses))
    ssh_jobs.append(job)
    described = cli("connect", job.job_id, "--workers", "2", "--timeout", "90")  # by job id, as a user attaches
    assert described.returncode == 0 and "workers:   2 (2 threads)" in described.stdout, described.stderr
    with connect(job.scheduler_file, n_workers=2, timeout=30, job=job) as bridge:
        assert bridge.gather(bridge.map(operator.add, [1, 2, 3], [10, 20, 30])) == [11, 22, 33]
        on_hosts = set(hosts.descendants())
        assert on_hosts
        bridge.shutdown()
    assert wait_for(lambda: job.status().finished, timeout=30)
    assert (job.status().state, job.status().exit_code) == ("COMPLETED", 0)
    assert wait_for(lambda: not (on_hosts & set(hosts.descendants())), timeout=15)
    assert not Path(job.scheduler_file).exists()


def test_a_host_that_refuses_ssh_fails_the_job_at_once_with_its_name(two_hosts, ssh_spec, ssh_jobs) -> None:
    cluster, _ = two_hosts
    job = jobs.submit(ssh_spec([cluster.node_addresses[0], cluster.host_address]))  # no sshd on the bridge
    ssh_jobs.append(job)
    assert wait_for(lambda: job.status().finished, timeout=60)
    assert job.status().state == "FAILED"
    status = cli("status", job.job_id).stdout
    assert f"the job said: the check on host {cluster.host_address} failed" in status and "refused" in status, status
    assert not job_processes(job.job_id)


def test_the_dashboard_reaches_its_owner_through_ssh_and_nobody_else(two_hosts, batch_jobs, other_user, tmp_path,
                                                                      monkeypatch) -> None:  # noqa: F811
    cluster, hosts = two_hosts
    monkeypatch.chdir(tmp_path)  # sbatch writes the job's output here
    job = jobs.submit(JobSpec(scheduler="slurm", interface="ib0", python=sys.executable, walltime="10m",
                              mem_per_cpu="400M", scheduler_file=str(tmp_path / "{job_id}" / "scheduler.json")))
    batch_jobs.append(job)
    with connect(job=job, n_workers=1, timeout=120) as bridge:
        worker_pages = [(address.split("://")[1].rsplit(":", 1)[0], worker["services"]["dashboard"])
                        for address, worker in bridge.client.scheduler_info(n_workers=-1)["workers"].items()]
        link = bridge.dashboard_link
    said = cli("dashboard", job.job_id, "--scheduler", "slurm", "--login-host", "", "--json")
    assert said.returncode == 0, said.stderr
    shown = json.loads(said.stdout)
    node, port = shown["node"], shown["port"]
    address = cluster.node_addresses[cluster.nodes.index(node)]
    assert shown["host"] == "127.0.0.1" and shown["tunnel"] == ["ssh", "-N", "-L", f"{port}:127.0.0.1:{port}",
                                                                f"root@{node}"], shown
    assert link.startswith(f"{shown['url']} through an ssh tunnel to {node}") and "?token=" in link, link

    # Another user gets nothing: not the dashboard on the node's address, not a worker's pages.
    for host, page in [(address, port), *worker_pages]:
        tried = subprocess.run(["runuser", "-u", other_user, "--", "curl", "-s", "-m", "5", "-o", "/dev/null",
                                "-w", "%{http_code}", f"http://{host}:{page}/status"],
                               capture_output=True, text=True, timeout=30, cwd="/tmp")
        assert tried.stdout == "000" and tried.returncode == 7, (host, page, tried)  # 7: could not connect
    # Nor from a process of theirs on the scheduler's node (a shared node), where 127.0.0.1 is reached.
    namespace = cluster.netns[cluster.nodes.index(node)]
    on_node = subprocess.run(["nsenter", f"--net=/run/netns/{namespace}", "runuser", "-u", other_user, "--", "curl",
                              "-s", "-m", "5", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}/status"],
                             capture_output=True, text=True, timeout=30, cwd="/tmp")
    assert on_node.stdout.endswith("\n403") and "bokeh" not in on_node.stdout.lower(), on_node

    # The owner's tunnel, as printed (ssh -F: the test's keys, and node names as the nodes' addresses).
    config = tmp_path / "ssh_config"
    config.write_text("".join(f"Host {name}\n    HostName {ip}\n" for name, ip in zip(cluster.nodes, cluster.node_addresses))
                      + hosts.config.read_text())
    tunnel = subprocess.Popen([shown["tunnel"][0], "-F", str(config), "-o", "ExitOnForwardFailure=yes",
                               *shown["tunnel"][1:]], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        def page() -> str | None:
            done = subprocess.run(["curl", "-s", "-L", "-b", "", "-m", "10", shown["url"]], capture_output=True,
                                  text=True, timeout=30)  # as a browser: the cookie the token gives, kept
            return done.stdout if done.returncode == 0 and done.stdout else None

        assert wait_for(page, timeout=30), tunnel.stderr.read().decode() if tunnel.poll() is not None else "no page"
        assert "bokeh" in page().lower() and "needs bokeh" not in page().lower()
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=15)
