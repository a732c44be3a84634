"""Tests of the real-Slurm harness itself: jobs run on every node, nodes see their own ib0,
PMIx steps work across namespaces, the host reaches a server inside a node, and `down`
leaves no daemon, namespace or bridge behind."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

if TYPE_CHECKING:  # conftest is not importable as a module in every pytest import mode
    from conftest import SlurmCluster

SCRIPT = Path(__file__).with_name("slurm-cluster")

# One line per task: "<SLURMD_NODENAME> <hostname> inet <address on the interface>".
REPORT_NODE = (
    'echo "$SLURMD_NODENAME $(hostname) $(ip -4 -o addr show {iface} | grep -o "inet [0-9.]*")"'
)


def run_batch(cluster: SlurmCluster, name: str, *sbatch_args: str, timeout: float = 30.0) -> str:
    """Run a batch job to completion and return its output file's text."""
    output = cluster.dir / f"{name}.out"
    job_id = cluster.sbatch("-o", str(output), *sbatch_args)
    state = cluster.wait_for_job(job_id, timeout)
    text = output.read_text() if output.exists() else "(no output file)"
    assert state == "COMPLETED", f"job {job_id} ended {state}:\n{text}"
    return text


def node_reports(text: str) -> dict[str, tuple[str, str]]:
    """`nodename hostname inet addr` lines → {nodename: (hostname, addr)}."""
    reports = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(\S+) (\S+) inet ([0-9.]+)", line.strip())
        if match:
            reports[match[1]] = (match[2], match[3])
    return reports


def test_one_node_runs_a_batch_job_with_steps(slurm_cluster: SlurmCluster) -> None:
    assert slurm_cluster.nodes == ["node1"]
    assert slurm_cluster.interface == "lo"
    assert os.environ["SLURM_CONF"] == slurm_cluster.env["SLURM_CONF"]
    script = "srun " + f"bash -c '{REPORT_NODE.format(iface='lo')}'"
    text = run_batch(slurm_cluster, "one-node", "--wrap", script)
    assert node_reports(text) == {"node1": ("node1", "127.0.0.1")}


def test_pbs_job_through_qsub_sees_pbs_variables(slurm_cluster: SlurmCluster) -> None:
    script = slurm_cluster.dir / "pbs-job.sh"
    script.write_text("#!/bin/bash\n#PBS -N hpcb-pbs\necho \"name=$PBS_JOBNAME id=$PBS_JOBID\"\n")
    output = slurm_cluster.dir / "pbs-job.out"
    submitted = slurm_cluster.run("qsub", "-o", str(output), str(script))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert slurm_cluster.wait_for_job(job_id) == "COMPLETED"
    assert output.read_text().strip() == f"name=hpcb-pbs id={job_id}"


def test_three_nodes_each_see_their_own_ib0(slurm_cluster_3nodes: SlurmCluster) -> None:
    cluster = slurm_cluster_3nodes
    assert cluster.interface == "ib0"
    assert cluster.nodes == ["node1", "node2", "node3"]
    subnet = cluster.host_address.rsplit(".", 1)[0]  # 10.77.0 unless another cluster holds it
    assert cluster.node_addresses == [f"{subnet}.{k}" for k in (1, 2, 3)]
    script = "srun " + f"bash -c '{REPORT_NODE.format(iface='ib0')}'"
    text = run_batch(cluster, "three-nodes", "-N", "3", "--wrap", script)
    expected = {node: (node, addr) for node, addr in zip(cluster.nodes, cluster.node_addresses)}
    assert node_reports(text) == expected


def test_pmix_step_spans_three_nodes(slurm_cluster_3nodes: SlurmCluster) -> None:
    step = slurm_cluster_3nodes.run(
        "srun", "--mpi=pmix", "-N", "3", "-n", "3",
        "bash", "-c", 'echo "$PMIX_RANK $SLURMD_NODENAME"',
    )
    assert step.returncode == 0, step.stderr
    assert sorted(step.stdout.split("\n")[:-1]) == ["0 node1", "1 node2", "2 node3"]


def test_host_reaches_a_server_inside_node1(slurm_cluster_3nodes: SlurmCluster) -> None:
    """A Dask client on the host will connect to a scheduler bound to node1's ib0."""
    address = (slurm_cluster_3nodes.node_addresses[0], 45678)
    server = (
        "import socket; s = socket.create_server(%r); "
        "c, _ = s.accept(); c.sendall(b'hello from ' + socket.gethostname().encode())" % (address,)
    )
    job_id = slurm_cluster_3nodes.sbatch(
        "-w", "node1", "-o", str(slurm_cluster_3nodes.dir / "server.out"),
        "--wrap", f'timeout 20 python3 -c "{server}"',
    )
    assert receive_from(address, timeout=15.0) == b"hello from node1"
    assert slurm_cluster_3nodes.wait_for_job(job_id) == "COMPLETED"


def receive_from(address: tuple[str, int], timeout: float) -> bytes:
    """Connect (retrying until the server listens) and read what the server sends."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(address, timeout=2.0) as connection:
                return connection.recv(100)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_down_leaves_nothing_behind(
    slurm_cluster_3nodes: SlurmCluster, slurm_cluster_factory: Callable
) -> None:
    """A job step still running at `down` ends with the daemons; namespaces and bridge go.

    It runs beside the 3-node cluster, so it also shows that a second several-node cluster
    takes the next free subnet.
    """
    with slurm_cluster_factory(2) as cluster:
        assert cluster.host_address != slurm_cluster_3nodes.host_address
        job_id = cluster.sbatch("-N", "2", "-o", "/dev/null", "--wrap", "srun sleep 300")
        wait_for_state(cluster, job_id, "RUNNING")
        wait_until_found(lambda: processes_of(cluster.dir, with_steps=True), "slurmstepd")
        started = processes_of(cluster.dir, with_steps=True)
        assert {"munged", "slurmctld", "slurmd", "slurmstepd"} <= set(started.values())
        assert len(cluster.netns) == 2 and cluster.bridge
    alive = [pid for pid in started if Path(f"/proc/{pid}").exists()]
    assert alive == [], f"still running after down: {alive}"
    assert not any(name in netns_names() for name in cluster.netns)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert cluster.bridge not in links
    assert not cluster.dir.exists() or not (cluster.dir / "run" / "cluster.json").exists()
    again = subprocess.run([str(SCRIPT), "down", "--dir", str(cluster.dir)],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and "nothing was running" in again.stdout


def wait_for_state(cluster: SlurmCluster, job_id: str, wanted: str, timeout: float = 20) -> None:
    """Poll until the job reaches `wanted` (e.g. RUNNING)."""
    deadline = time.monotonic() + timeout
    while (state := cluster.job_state(job_id)) != wanted:
        assert time.monotonic() < deadline, f"job {job_id} is {state}, not {wanted}"
        time.sleep(0.2)


def wait_until_found(find: Callable[[], dict[int, str]], what: str, timeout: float = 10.0) -> None:
    """Poll `find` until a process named `what` shows up in its {pid: name} answer."""
    deadline = time.monotonic() + timeout
    while what not in find().values():
        assert time.monotonic() < deadline, f"no {what} appeared"
        time.sleep(0.2)


def processes_of(directory: Path, with_steps: bool) -> dict[int, str]:
    """Daemons whose command line names the cluster directory, plus (optionally) every
    slurmstepd in the same PID namespace as those daemons: {pid: name}."""
    found: dict[int, str] = {}
    namespaces = set()
    for pid, name, cmdline in all_processes():
        if name in ("munged", "slurmctld", "slurmd") and str(directory) in cmdline:
            found[pid] = name
            namespaces.add(os.readlink(f"/proc/{pid}/ns/pid"))
    if with_steps:
        for pid, name, _ in all_processes():
            try:
                same_namespace = os.readlink(f"/proc/{pid}/ns/pid") in namespaces
            except OSError:
                continue
            if name == "slurmstepd" and same_namespace:
                found[pid] = name
    return found


def all_processes() -> Iterator[tuple[int, str, str]]:
    """(pid, name, command line) of every process that can still be read."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            name = Path(f"/proc/{entry}/comm").read_text().strip()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        yield int(entry), name, cmdline


def netns_names() -> list[str]:
    """Names of the network namespaces `ip netns` knows."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.strip()]
