"""OpenSSH servers in the harness's network namespaces, for the ``--scheduler ssh`` tests.

Each node's namespace gets an ``sshd`` listening on its ``ib0`` address only (port 22 there; the
host's loopback gets none), with a host key, an authorized client key, a known-hosts file and
an ssh config file, all made in one private temporary folder. :func:`running_sshd` stops every
sshd and every process its sessions left (by PID, walking down from the sshd it started) and
removes the folder, also when the test fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from tests.conftest import register_leftover_check

SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class SSHHosts:
    """sshd's on the nodes: their addresses and an ssh config (``ssh -F config``) that logs in there."""

    folder: Path
    addresses: list[str]
    netns: list[str]
    config: Path
    sshd_pids: list[int]

    def descendants(self) -> dict[int, str]:
        """Live processes below the sshd's (sessions, shells, workers), by PID, with the namespace each runs in."""
        children: dict[int, list[int]] = {}
        for pid in _pids():
            parent = _parent(pid)
            if parent is not None:
                children.setdefault(parent, []).append(pid)
        found: dict[int, str] = {}
        for sshd, namespace in zip(self.sshd_pids, self.netns):
            todo = list(children.get(sshd, []))
            while todo:
                pid = todo.pop()
                if _alive(pid):
                    found[pid] = namespace
                todo += children.get(pid, [])
        return found


def netns_inode(name: str) -> int:
    """The inode that identifies a named network namespace (compare ``/proc/PID/ns/net``)."""
    return os.stat(f"/run/netns/{name}").st_ino


def process_netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _parent(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"  # PID 1 reaps slowly: a zombie is dead


def _listening(address: str, port: int = 22) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
    except OSError:
        return False
    return True


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "hpcbridge-test", "-f", str(path)],
                   check=True, capture_output=True, timeout=30)
    return path.with_suffix(".pub").read_text().strip()


def _config_text(folder: Path, address: str) -> str:
    return "\n".join([
        f"ListenAddress {address}:22",
        f"HostKey {folder / 'host_key'}",
        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
        "PidFile none",
        "UsePAM no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "PrintMotd no",
        "",
    ])


@contextlib.contextmanager
def running_sshd(addresses: list[str], netns: list[str]) -> Iterator[SSHHosts]:
    """Start one sshd per namespace on its address; yield the hosts; always stop them and clean up."""
    folder = Path(tempfile.mkdtemp(prefix="hpcb-sshd-"))
    register_leftover_check("dir", folder)
    made_run_dir = not Path("/run/sshd").exists()  # sshd's privilege-separation folder
    started: list[subprocess.Popen] = []
    hosts: SSHHosts | None = None
    try:
        if made_run_dir:
            Path("/run/sshd").mkdir(mode=0o755)
        host_key = _keygen(folder / "host_key")
        (folder / "authorized_keys").write_text(_keygen(folder / "client_key") + "\n")
        (folder / "known_hosts").write_text("".join(f"{address} {host_key}\n" for address in addresses))
        config = folder / "ssh_config"
        config.write_text("\n".join([
            "Host *",
            "    User root",
            f"    IdentityFile {folder / 'client_key'}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {folder / 'known_hosts'}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    LogLevel ERROR",
            "",
        ]))
        for address, namespace in zip(addresses, netns):
            sshd_config = folder / f"sshd_config.{address}"
            sshd_config.write_text(_config_text(folder, address))
            with open(folder / f"sshd.{address}.log", "wb") as log:
                started.append(subprocess.Popen(
                    ["nsenter", f"--net=/run/netns/{namespace}", SSHD, "-D", "-e", "-f", str(sshd_config)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log))
        deadline = time.monotonic() + START_TIMEOUT
        while not all(_listening(address) for address in addresses):
            dead = [p for p in started if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                logs = "\n".join(log.read_text() for log in folder.glob("sshd.*.log"))
                raise RuntimeError(f"sshd did not start on {addresses}:\n{logs}")
            time.sleep(0.1)
        hosts = SSHHosts(folder, list(addresses), list(netns), config, [p.pid for p in started])
        yield hosts
    finally:
        leftovers = list(hosts.descendants()) if hosts else []
        for process in started:
            process.send_signal(signal.SIGTERM)  # nsenter execs sshd: the same PID
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for process in started:
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
        if made_run_dir:
            shutil.rmtree("/run/sshd", ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
