"""The compose cluster users try hpcbridge on (compose/docker-compose.yml): real Docker, real Slurm in containers.

The test starts a Docker engine of its own (tests/cluster/docker_engine.py: its own namespaces, so
the containers get Docker's usual bridge network and no port of theirs meets the harness's
Slurm), builds a Debian bookworm base image with debootstrap (this machine has no Docker Hub),
and runs the compose file as the README says: ``up``, ``hpcbridge submit -N 2`` in the login
container, a map over both nodes' workers, ``hpcbridge cancel``, ``down``. Only two things differ
from a laptop, both through the compose file's own variables: BASE_IMAGE names the debootstrap
image, and PIP_OPTIONS installs from wheels this test downloads and serves inside the namespace
(the build cannot reach PyPI through this machine's TLS-inspecting proxy).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from hpcbridge.workloads.primes import sum_prime_factors
from tests.cluster.docker_engine import DockerEngine, docker_engine
from tests.conftest import register_leftover_check

REPOSITORY = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPOSITORY / "compose" / "docker-compose.yml"
PROJECT = "hpcbridge-compose-test"
BASE_IMAGE = "hpcbridge-compose-base:bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
UPPER = 100_000
WHEEL_PORT = 8000  # inside the engine's own network namespace: nothing else listens there


def test_compose_cluster_runs_a_map_on_both_nodes() -> None:
    assert sys.version_info[:2] == (3, 11), "the test downloads wheels for this Python; the image's (bookworm) is 3.11"
    for command in ("dockerd", "docker", "docker-compose", "debootstrap", "slirp4netns", "unshare", "nsenter"):
        assert shutil.which(command), f"{command} is missing: `make system-packages` installs it"
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="hpcbridge-compose-"))
    register_leftover_check("dir", scratch)
    try:
        # The slow downloads run side by side: the base system, and the wheels hpcbridge needs.
        rootfs = scratch / "rootfs"
        debootstrap = subprocess.Popen(
            ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
            stdin=subprocess.DEVNULL, stdout=open(scratch / "debootstrap.log", "wb"), stderr=subprocess.STDOUT)
        wheels = subprocess.Popen(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--dest", str(scratch / "wheels"), str(REPOSITORY), "hatchling"],
            stdin=subprocess.DEVNULL, stdout=open(scratch / "pip.log", "wb"), stderr=subprocess.STDOUT)
        try:
            with docker_engine() as engine:
                _wait(debootstrap, 300, scratch / "debootstrap.log")
                _wait(wheels, 300, scratch / "pip.log")
                shutil.rmtree(rootfs / "var" / "cache" / "apt" / "archives", ignore_errors=True)
                _import(engine, rootfs, BASE_IMAGE)
                shutil.rmtree(rootfs)
                wheel_url = engine.serve(scratch / "wheels", WHEEL_PORT)
                print(f"engine and base image ready: {time.monotonic() - started:.0f} s")
                _run_compose_cluster(engine, wheel_url, started)
        finally:
            for process in (debootstrap, wheels):
                if process.poll() is None:
                    process.kill()
                    process.wait(30)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        assert not scratch.exists()


def _run_compose_cluster(engine: DockerEngine, wheel_url: str, started: float) -> None:
    """up, wait for two idle nodes, submit -N 2, map on both, cancel, down: the README's steps."""
    env = {**engine.env, "BASE_IMAGE": BASE_IMAGE,
           "PIP_OPTIONS": f"--no-index --find-links {wheel_url} --trusted-host {wheel_url.split('/')[2].split(':')[0]}"}

    def compose(*args: str, timeout: float = 120) -> str:
        command = ["docker-compose", "--project-name", PROJECT, "--file", str(COMPOSE_FILE), *args]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result.stdout

    def login(*command: str, timeout: float = 120) -> str:
        return compose("exec", "-T", "--user", "dask", "login", *command, timeout=timeout)

    try:
        compose("up", "--detach", "--build", timeout=600)
        print(f"images built, containers up: {time.monotonic() - started:.0f} s")
        deadline = time.monotonic() + 90
        while (nodes := login("sinfo", "--noheader", "--Node", "--format=%N %t").split()) != ["node1", "idle", "node2", "idle"]:
            assert time.monotonic() < deadline, f"sinfo says {nodes}, not two idle nodes\n{compose('logs', '--tail=30')}"
            time.sleep(0.5)
        submitted = login("hpcbridge", "submit", "-N", "2", "--time", "10")
        job_id = submitted.split("job id:", 1)[1].split()[0]
        try:
            described = login("hpcbridge", "connect", job_id, "--workers", "2", "--timeout", "120", timeout=180)
            result = json.loads(login("python3", "/usr/local/share/hpcbridge/sum_primes.py", job_id, str(UPPER),
                                      timeout=180).strip().splitlines()[-1])
        except (AssertionError, json.JSONDecodeError):
            print(login("hpcbridge", "logs", job_id, "--tail", "40"))
            raise
        assert f"job:       {job_id} (slurm)" in described and "workers:   2 (2 threads)" in described, described
        assert result == {"upper": UPPER, "sum": sum_prime_factors((2, UPPER)), "nodes": ["node1", "node2"]}
        assert login("hpcbridge", "cancel", job_id).strip() == f"cancelled {job_id}"
        deadline = time.monotonic() + 60
        while f"{job_id}: CANCELLED" not in (status := login("hpcbridge", "status", job_id)):
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        print(f"map on both nodes done: {time.monotonic() - started:.0f} s")
    finally:
        compose("down", "--volumes", "--timeout", "5")  # the images go with the engine's data root
    assert not engine.docker("ps", "--all", "--quiet").stdout.strip()
    assert not engine.docker("volume", "ls", "--quiet").stdout.strip()


def _import(engine: DockerEngine, rootfs: Path, image: str) -> None:
    """``tar -C rootfs -c . | docker import - image``: the folder debootstrap made, as an image."""
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        imported = subprocess.run(["docker", "import", "-", image], stdin=tar.stdout, env=engine.env,
                                  capture_output=True, text=True, timeout=120)
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait(30)
    assert (tar.returncode, imported.returncode) == (0, 0), f"tar | docker import: {imported.stderr[-2000:]}"


def _wait(process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{process.args[0]} took over {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")
    assert process.returncode == 0, f"{process.args[0]} exited {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}"
