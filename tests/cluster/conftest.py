"""Fixtures that start a real Slurm cluster on this machine with `tests/cluster/slurm-cluster`.

The clusters are core test infrastructure, not an optional extra: when one cannot start (not
root, no namespaces, a package missing) the fixture fails with the script's reason instead of
skipping, so a broken machine never passes silently.

Each fixture starts its cluster in a fresh world-executable directory under /tmp (munged refuses
a socket below a 0700 directory, which rules out pytest's own tmp_path), exports the cluster's
env file into os.environ while it runs, and always brings the cluster down afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import pytest

from tests.conftest import register_leftover_check

SCRIPT = Path(__file__).with_name("slurm-cluster")
UP_TIMEOUT = 180.0  # includes apt-get install on a fresh machine
DOWN_TIMEOUT = 60.0
ACTIVE_JOB_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "UNKNOWN"}


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    """A running cluster, as the tests see it.

    env: the variables of the cluster's env file (SLURM_CONF, HPCB_SLURM_*, OMPI_ALLOW_*);
      they are also in os.environ while the fixture is active.
    nodes / node_addresses: node names and their addresses, in the same order
      (node1 -> 127.0.0.1 on one node; nodeK -> 10.77.0.K with several, or 10.77.X.K when
      another cluster on this machine already holds 10.77.0.0/24).
    interface: the network interface Dask should bind to on the nodes ("lo" or "ib0").
    host_address: the host's address as the nodes see it (127.0.0.1, or the bridge's .254).
    netns: the nodes' network namespaces (empty on one node); bridge: the host bridge or "".
    """

    dir: Path
    env_file: Path
    env: dict[str, str]
    nodes: list[str]
    node_addresses: list[str]
    interface: str
    host_address: str
    netns: list[str]
    bridge: str

    def run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a command (e.g. sbatch, squeue) with the cluster's environment; text output."""
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})

    def sbatch(self, *argv: str) -> str:
        """Submit a batch job (`sbatch --parsable ...`); return its job id."""
        result = self.run("sbatch", "--parsable", *argv)
        assert result.returncode == 0, f"sbatch failed: {result.stderr}"
        return result.stdout.strip().split(";")[0]

    def job_state(self, job_id: str) -> str:
        """The job's state as `scontrol show job` gives it (PENDING, RUNNING, COMPLETED, ...)."""
        fields = self.run("scontrol", "show", "job", "-o", job_id).stdout.split()
        return next((f.split("=", 1)[1] for f in fields if f.startswith("JobState=")), "UNKNOWN")

    def wait_for_job(self, job_id: str, timeout: float = 30.0) -> str:
        """Poll until the job has left PENDING/RUNNING/COMPLETING; return its final state."""
        deadline = time.monotonic() + timeout
        while (state := self.job_state(job_id)) in ACTIVE_JOB_STATES:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {state} after {timeout:.0f} s")
            time.sleep(0.2)
        return state


def read_env_file(path: Path) -> dict[str, str]:
    """The `export KEY=VALUE` lines of an env file written by `slurm-cluster up`."""
    env = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export":
            key, _, value = words[1].partition("=")
            env[key] = value
    return env


def cluster_from_env(env_file: Path) -> SlurmCluster:
    env = read_env_file(env_file)
    return SlurmCluster(
        dir=Path(env["HPCB_SLURM_DIR"]),
        env_file=env_file,
        env=env,
        nodes=env["HPCB_SLURM_NODES"].split(","),
        node_addresses=env["HPCB_SLURM_NODE_ADDRESSES"].split(","),
        interface=env["HPCB_SLURM_INTERFACE"],
        host_address=env["HPCB_SLURM_HOST_ADDRESS"],
        netns=[name for name in env["HPCB_SLURM_NETNS"].split(",") if name],
        bridge=env["HPCB_SLURM_BRIDGE"],
    )


def cluster_command(*argv: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *argv], capture_output=True, text=True,
                          timeout=timeout)


@contextlib.contextmanager
def exported(env: dict[str, str]) -> Iterator[None]:
    """Set variables in os.environ for the duration; restore the previous values afterwards."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def running_cluster(nodes: int = 1, *options: str) -> Iterator[SlurmCluster]:
    """Bring a cluster up in a fresh directory, yield it, and always bring it down again.

    The directory is deleted after a clean `down`; when `up` fails it is kept for its logs.
    """
    directory = Path(tempfile.mkdtemp(prefix="hpcb-slurm-", dir="/tmp"))
    directory.chmod(0o755)
    register_leftover_check("cluster", directory)
    try:
        up = cluster_command("up", "--dir", str(directory), "--nodes", str(nodes), *options,
                             timeout=UP_TIMEOUT)
        if up.returncode != 0:
            pytest.fail(f"slurm-cluster up failed (logs in {directory}):\n{up.stderr}{up.stdout}",
                        pytrace=False)
        cluster = cluster_from_env(Path(up.stdout.strip().splitlines()[-1]))
        with exported(cluster.env):
            yield cluster
    finally:
        down = cluster_command("down", "--dir", str(directory), timeout=DOWN_TIMEOUT)
        if down.returncode != 0:
            pytest.fail(f"slurm-cluster down failed:\n{down.stderr}{down.stdout}", pytrace=False)
    shutil.rmtree(directory, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slurm: runs on a real Slurm cluster started by tests/cluster/slurm-cluster"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test in this folder `slurm`, so `-m "not slurm"` leaves them out."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """One node (`node1`) on loopback; Dask binds to `lo`."""
    with running_cluster(1) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def slurm_cluster_3nodes() -> Iterator[SlurmCluster]:
    """Three nodes (`node1`..`node3`), each in its own network namespace on `ib0` 10.77.0.K."""
    with running_cluster(3) as cluster:
        yield cluster


@pytest.fixture
def slurm_cluster_factory() -> Callable[..., ContextManager[SlurmCluster]]:
    """`with slurm_cluster_factory(nodes, *extra_up_options) as cluster:` for own set-ups.

    A several-node cluster started beside another one takes the next free subnet (10.77.1 ...).
    """
    return running_cluster


@pytest.fixture
def batch_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Build specs for a test cluster that run this interpreter and keep files in the test's folder.

    The test runs in its folder, because sbatch and qsub write the job's output where they are run.
    """
    monkeypatch.chdir(tmp_path)

    def make(cluster: SlurmCluster, scheduler: str, **values):
        from hpcbridge.job.spec import JobSpec

        values.setdefault("interface", cluster.interface)
        values.setdefault("python", sys.executable)
        values.setdefault("scheduler_file", str(tmp_path / "{job_id}" / "scheduler.json"))
        values.setdefault("walltime", "10m")
        return JobSpec(scheduler=scheduler, **values)

    return make


@pytest.fixture
def submit_3nodes(slurm_cluster_3nodes, batch_spec, batch_jobs):
    """``submit_3nodes(**spec_values)``: a Slurm job over the three namespace nodes, one 300 MB
    worker each (values override), cancelled after the test; the fault tests' jobs."""

    def make(**values):
        from hpcbridge.job import submit as jobs

        values = {"nodes": 3, "ntasks_per_node": 1, "cpus_per_task": 1, "mem_per_cpu": "300M", **values}
        job = jobs.submit(batch_spec(slurm_cluster_3nodes, "slurm", **values))
        batch_jobs.append(job)
        return job

    return make


@pytest.fixture
def batch_jobs() -> Iterator[list]:
    """Submitted jobs (hpcbridge.job.submit.SubmittedJob), each cancelled at the end if it still runs."""
    submitted: list = []
    yield submitted
    for job in submitted:
        if not job.status().finished:
            job.cancel()
        deadline = time.monotonic() + 60
        while not job.status().finished:
            assert time.monotonic() < deadline, f"job {job.job_id} did not end"
            time.sleep(0.2)


# --- OpenPBS (tests/cluster/pbs-cluster) ------------------------------------------------------

PBS_SCRIPT = Path(__file__).with_name("pbs-cluster")


@dataclasses.dataclass(frozen=True)
class NodesCluster:
    """A running batch system on namespace nodes, started by a harness script of this folder
    (pbs-cluster, sge-cluster): its nodes, their addresses on ``interface`` and the host's.

    env: the env file's variables (PATH with the batch system's commands first, HPCB_<SYSTEM>_*);
    they are also in os.environ while the fixture is active.
    """

    dir: Path
    env: dict[str, str]
    nodes: list[str]
    node_addresses: list[str]
    interface: str
    host_address: str

    def run(self, *argv: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a command (qstat, pbsnodes, qacct, qconf, ...) with the cluster's environment; text output."""
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **self.env})


@contextlib.contextmanager
def running_nodes_cluster(script: Path, system: str, nodes: int) -> Iterator[NodesCluster]:
    """Bring the cluster of harness ``script`` up with ``nodes`` nodes in a fresh directory, yield it,
    and always bring it down again (``system``: pbs or sge, as in its HPCB_<SYSTEM>_* variables)."""
    directory = Path(tempfile.mkdtemp(prefix=f"hpcb-{system}-", dir="/tmp"))
    directory.chmod(0o755)
    register_leftover_check("cluster", directory)

    def command(*argv: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=timeout)

    try:
        up = command("up", "--dir", str(directory), "--nodes", str(nodes), timeout=UP_TIMEOUT)
        if up.returncode != 0:
            pytest.fail(f"{script.name} up failed (logs in {directory}):\n{up.stderr}{up.stdout}", pytrace=False)
        env = read_env_file(Path(up.stdout.strip().splitlines()[-1]))
        prefix = f"HPCB_{system.upper()}_"
        cluster = NodesCluster(dir=directory, env=env, nodes=env[f"{prefix}NODES"].split(","),
                               node_addresses=env[f"{prefix}NODE_ADDRESSES"].split(","),
                               interface=env[f"{prefix}INTERFACE"], host_address=env[f"{prefix}HOST_ADDRESS"])
        with exported(env):
            yield cluster
    finally:
        down = command("down", "--dir", str(directory), timeout=DOWN_TIMEOUT)
        if down.returncode != 0:
            pytest.fail(f"{script.name} down failed:\n{down.stderr}{down.stdout}", pytrace=False)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def pbs_cluster() -> Iterator[NodesCluster]:
    """Three OpenPBS nodes (`node1`..`node3`, 2 ncpus each) in network namespaces on `ib0`: node1 runs the
    server, scheduler and a mom; every node a mom."""
    with running_nodes_cluster(PBS_SCRIPT, "pbs", 3) as cluster:
        yield cluster


OPENLAVA_SCRIPT = Path(__file__).with_name("openlava-cluster")
OPENLAVA_UP_TIMEOUT = 600.0  # includes building OpenLava (~90 s) on a fresh machine


@dataclasses.dataclass(frozen=True)
class OpenLavaCluster:
    """A running one-host OpenLava (LSF's commands), as the tests see it.

    env: the variables of its env file (LSF_ENVDIR, PATH with OpenLava's bin first,
      HPCB_OPENLAVA_*); they are also in os.environ while the fixture is active.
    host: the one host (this machine's hostname, on loopback); interface: "lo".
    """

    dir: Path
    env: dict[str, str]
    host: str
    interface: str = "lo"

    def run(self, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        """Run an OpenLava command (bsub, bjobs -l, ...) with the cluster's environment; text output."""
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env={**os.environ, **self.env})


@pytest.fixture(scope="module")
def openlava_cluster() -> Iterator[OpenLavaCluster]:
    """One OpenLava host started by tests/cluster/openlava-cluster, always brought down afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="hpcb-openlava-", dir="/tmp"))
    directory.chmod(0o755)
    register_leftover_check("cluster", directory)
    try:
        up = subprocess.run([str(OPENLAVA_SCRIPT), "up", "--dir", str(directory)], capture_output=True, text=True,
                            timeout=OPENLAVA_UP_TIMEOUT)
        if up.returncode != 0:
            pytest.fail(f"openlava-cluster up failed (logs in {directory}):\n{up.stderr}{up.stdout}", pytrace=False)
        env = read_env_file(Path(up.stdout.strip().splitlines()[-1]))
        with exported(env):
            yield OpenLavaCluster(dir=directory, env=env, host=env["HPCB_OPENLAVA_HOST"])
    finally:
        down = subprocess.run([str(OPENLAVA_SCRIPT), "down", "--dir", str(directory)], capture_output=True, text=True,
                              timeout=DOWN_TIMEOUT)
        if down.returncode != 0:
            pytest.fail(f"openlava-cluster down failed:\n{down.stderr}{down.stdout}", pytrace=False)
    shutil.rmtree(directory, ignore_errors=True)


# --- Son of Grid Engine (tests/cluster/sge-cluster) ------------------------------------------

SGE_SCRIPT = Path(__file__).with_name("sge-cluster")


@pytest.fixture(scope="module")
def sge_cluster() -> Iterator[NodesCluster]:
    """Two Grid Engine nodes (`node1`, `node2`, 2 slots each) in network namespaces on `ib0`: node1 runs the
    qmaster and an execd, node2 an execd; parallel environments mpi ($fill_up), rr ($round_robin) and
    smp ($pe_slots)."""
    with running_nodes_cluster(SGE_SCRIPT, "sge", 2) as cluster:
        yield cluster
