"""A Docker engine of the test's own, in network, mount and PID namespaces of its own.

Docker's default networking (a bridge, NAT and a FORWARD policy of DROP in iptables) would cut
the Slurm harness's bridges if it ran in this machine's network namespace
(``bridge-nf-call-iptables`` is 1). Inside a network namespace of its own it changes nothing
outside: its bridges, iptables rules and container ports live there, so the compose cluster runs
with the networking a laptop's Docker gives it, and no port of it can clash with the harness's
Slurm or another test. ``slirp4netns`` (a user-space TCP/IP stack, as rootless Docker uses) is
the namespace's way out, for apt and pip while images build; it changes nothing on this machine.

Everything lives in one private temporary folder: the data root, the exec root, the socket, the
logs. The namespace's mount table takes containerd's sockets (``/run`` gets a tmpfs there) and
every overlay mount, and its PID namespace every process, so stopping the engine by PID ends all
of it; :meth:`DockerEngine.stop` then removes the cgroups Docker made and the folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from tests.conftest import register_leftover_check

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
#: docker0 inside the namespace: the address build steps reach the test's wheel server at.
BRIDGE_ADDRESS = "172.17.0.1"

# Runs as PID 1 of the new namespaces: waits until slirp4netns has given the namespace its
# uplink, then becomes dockerd. /run gets a tmpfs so containerd's shim sockets stay in here.
_NAMESPACE_INIT = """
set -eu
folder=$1
while [ ! -e "$folder/uplink-ready" ]; do sleep 0.1; done
ip link set lo up
mount -t tmpfs -o mode=0755 tmpfs /run
exec dockerd --config-file "$folder/daemon.json" >"$folder/dockerd.log" 2>&1
"""


class DockerEngine:
    """A running dockerd and what its clients need: ``env`` (``DOCKER_HOST``) and the namespace's PID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.socket = folder / "docker.sock"
        self.cgroup_parent = f"hpcbridge-compose-{os.getpid()}-{folder.name}"
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{self.socket}"}
        self._namespace: subprocess.Popen[bytes] | None = None
        self._uplink: subprocess.Popen[bytes] | None = None
        self._helpers: list[subprocess.Popen[bytes]] = []

    @property
    def namespace_pid(self) -> int:
        """A host PID inside the engine's network namespace (for ``nsenter``)."""
        assert self._namespace is not None
        return self._namespace.pid

    def start(self) -> None:
        """Start dockerd in its namespaces with slirp4netns as its uplink; wait until it answers."""
        config = {
            "data-root": str(self.folder / "data"),
            "exec-root": str(self.folder / "exec"),
            "pidfile": str(self.folder / "dockerd.pid"),
            "hosts": [f"unix://{self.socket}"],
            "cgroup-parent": f"/{self.cgroup_parent}",
            "bip": f"{BRIDGE_ADDRESS}/16",
            "dns": ["10.0.2.3"],  # slirp4netns's DNS forwarder
            "deprecated-key-path": str(self.folder / "key.json"),  # else /etc/docker/key.json
        }
        (self.folder / "daemon.json").write_text(json.dumps(config))
        self._namespace = subprocess.Popen(
            ["unshare", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc",
             "sh", "-c", _NAMESPACE_INIT, "namespace-init", str(self.folder)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.folder / "unshare.log", "wb"),
            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        while _net_namespace(self._namespace.pid) == _net_namespace(os.getpid()):
            assert self._namespace.poll() is None and time.monotonic() < deadline, self._log("unshare.log")
            time.sleep(0.05)
        self._uplink = subprocess.Popen(
            ["slirp4netns", "--configure", "--mtu=65520", "--disable-host-loopback", str(self._namespace.pid), "tap0"],
            stdin=subprocess.DEVNULL, stdout=open(self.folder / "slirp4netns.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        while "tap0" not in self._in_namespace("cat", "/proc/net/dev"):
            assert self._uplink.poll() is None and time.monotonic() < deadline, self._log("slirp4netns.log")
            time.sleep(0.05)
        (self.folder / "uplink-ready").touch()
        while self.docker("version", check=False).returncode != 0:
            assert self._namespace.poll() is None and time.monotonic() < deadline, self._log("dockerd.log")
            time.sleep(0.2)

    def serve(self, folder: Path, port: int) -> str:
        """Serve ``folder`` over HTTP on docker0 inside the namespace (build steps reach it); return its URL."""
        server = subprocess.Popen(
            ["nsenter", f"--net=/proc/{self.namespace_pid}/ns/net", sys.executable, "-m", "http.server",
             "--bind", BRIDGE_ADDRESS, "--directory", str(folder), str(port)],
            stdin=subprocess.DEVNULL, stdout=open(self.folder / f"http-{port}.log", "wb"), stderr=subprocess.STDOUT,
            start_new_session=True)
        self._helpers.append(server)
        deadline = time.monotonic() + START_TIMEOUT
        while f":{port:04X} 00000000:0000 0A" not in self._in_namespace("cat", "/proc/net/tcp"):
            assert server.poll() is None and time.monotonic() < deadline, self._log(f"http-{port}.log")
            time.sleep(0.05)
        return f"http://{BRIDGE_ADDRESS}:{port}/"

    def docker(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run the docker command line against this engine."""
        return _run(["docker", *args], self.env, check, timeout)

    def stop(self) -> None:
        """Stop dockerd by PID (every container and containerd with it), the helpers, then remove the cgroups."""
        if self._namespace is not None and self._namespace.poll() is None:
            dockerd = _children(self._namespace.pid)
            for pid in dockerd:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            try:
                self._namespace.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self._namespace.pid, signal.SIGKILL)  # --kill-child: the namespace's PID 1 dies, then all in it
                self._namespace.wait(STOP_TIMEOUT)
        for process in [*self._helpers, self._uplink]:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP_TIMEOUT)
        self._remove_cgroups()

    def _remove_cgroups(self) -> None:
        """rmdir the cgroup folders under our --cgroup-parent, deepest first (empty once their processes are gone)."""
        for top in Path("/sys/fs/cgroup").glob(f"*/{self.cgroup_parent}"):
            self._rmdir_tree(top)
        top = Path("/sys/fs/cgroup") / self.cgroup_parent  # cgroup v2
        if top.is_dir():
            self._rmdir_tree(top)

    @staticmethod
    def _rmdir_tree(top: Path) -> None:
        folders = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]
        for folder in folders:
            deadline = time.monotonic() + STOP_TIMEOUT
            while True:
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # a process still exiting
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)

    def _in_namespace(self, *command: str) -> str:
        result = subprocess.run(["nsenter", f"--net=/proc/{self.namespace_pid}/ns/net", *command],
                                capture_output=True, text=True, timeout=30)
        return result.stdout

    def _log(self, name: str) -> str:
        path = self.folder / name
        return f"{name}:\n" + (path.read_text(errors="replace")[-3000:] if path.exists() else "(none)")


@contextlib.contextmanager
def docker_engine() -> Iterator[DockerEngine]:
    """A started :class:`DockerEngine` in a new private folder; stopped and removed afterwards, also on failure."""
    folder = Path(tempfile.mkdtemp(prefix="hpcbridge-docker-"))
    register_leftover_check("dir", folder)
    engine = DockerEngine(folder)
    try:
        engine.start()
        yield engine
    finally:
        try:
            engine.stop()
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            assert not folder.exists(), f"{folder} is left behind"


def _run(command: list[str], env: dict[str, str], check: bool, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def _net_namespace(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children += [int(child) for child in task.read_text().split()]
    return children
