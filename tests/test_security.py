"""Secure by default: TLS with per-job certificates, owner-only files, and who is refused how.

One local cluster for the module, made with the defaults (protocol tls, no certificate files
given), its scheduler file under a world-readable folder so that only hpcbridge's own modes
keep another user out. The refused clients run as separate processes, because "refused" must
also mean "the process exits at once" (a refused distributed.Client used to hold the
interpreter ~40 s); each is bounded by its subprocess timeout.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from hpcbridge.client.bridge import connect
from hpcbridge.cluster import broadcasts as broadcast
from hpcbridge.job import submit as jobs
from hpcbridge.job.spec import JobSpec
from hpcbridge.tls import create_certificates
from tests.conftest import job_processes, register_leftover_check, wait_for

REPOSITORY = Path(__file__).resolve().parent.parent
REFUSAL_BOUND = 30  # seconds a refused client process may take in all, imports included (it took 3-5 s here)


@pytest.fixture(scope="module")
def open_folder() -> Iterator[Path]:
    """A 0755 folder under /tmp: anyone may look inside, so only the job's own modes protect it."""
    folder = Path(tempfile.mkdtemp(prefix="hpcbt-security-", dir="/tmp"))
    folder.chmod(0o755)
    register_leftover_check("dir", folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def module_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def hpcbridge_home(module_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test of the module sees the module job's records (status, cancel, logs)."""
    monkeypatch.setenv("HPCBRIDGE_HOME", str(module_home))
    return module_home


@pytest.fixture(scope="module")
def tls_job(open_folder: Path, module_home: Path) -> Iterator[jobs.SubmittedJob]:
    """A local cluster of 2 workers with every security setting at its default."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HPCBRIDGE_HOME", str(module_home))
        job = jobs.submit(JobSpec(scheduler="local", ntasks_per_node=2, python=sys.executable,
                                  scheduler_file=str(open_folder / "{job_id}" / "scheduler.json")))
        try:
            connect(job=job, n_workers=2, timeout=120).close()
            yield job
        finally:
            job.cancel()
            assert wait_for(lambda: not job_processes(job.job_id), timeout=30)


@pytest.fixture(scope="module")
def other_user() -> Iterator[str]:
    """A Unix user made for this module (no home, no login shell) and removed after it."""
    name = f"hpcbt{secrets.token_hex(3)}"
    register_leftover_check("user", name)
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
                    name], check=True, capture_output=True, timeout=30)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=True, capture_output=True, timeout=30)


def python_for(user: str) -> list[str]:
    """A command that runs this checkout's hpcbridge with a Python ``user`` may execute.

    This interpreter may live under root's 0700 home; the system's Python of the same version
    then runs the same installed packages.
    """
    site = next(p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix))
    for python in (sys.executable, f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"):
        command = ["env", "HOME=/tmp", f"PYTHONPATH={site}:{REPOSITORY}", python]
        probe = subprocess.run(["runuser", "-u", user, "--", *command, "-c", "import hpcbridge.cli"],
                               capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return ["runuser", "-u", user, "--", *command]
    pytest.fail(f"no Python that user {user} can run hpcbridge with: {probe.stderr}")


def refused(command: list[str]) -> tuple[str, float]:
    """Run a client command that must fail; return its one-line error and how long the process took."""
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=REFUSAL_BOUND, cwd="/tmp")
    seconds = time.monotonic() - started
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    return done.stderr.strip(), seconds


def cli(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "hpcbridge.cli", *arguments]


def copy_of(job: jobs.SubmittedJob, folder: Path, name: str, **changes) -> Path:
    """A readable copy of the job's scheduler file (the address leaked), with ``changes`` applied."""
    info = json.loads(Path(job.scheduler_file).read_text())
    for key, value in changes.items():
        if key == "tls":
            info["hpcbridge"]["tls"] = value
        else:
            info[key] = value
    copy = folder / name
    copy.write_text(json.dumps(info))
    copy.chmod(0o644)
    return copy


def test_every_file_and_folder_is_owner_only_and_the_key_is_never_in_view(tls_job) -> None:
    scheduler_file = Path(tls_job.scheduler_file)
    certificates = scheduler_file.with_name("scheduler.tls")
    assert scheduler_file.parent.stat().st_mode & 0o777 == 0o700
    assert scheduler_file.stat().st_mode & 0o777 == 0o600
    assert certificates.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in certificates.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in certificates.iterdir())
    key = (certificates / "key.pem").read_text()
    assert "PRIVATE KEY" in key
    script = Path(tls_job.log_path()).with_name("job.sh").read_text()
    assert "PRIVATE KEY" not in script and "BEGIN CERTIFICATE" not in script
    assert Path(tls_job.log_path()).stat().st_mode & 0o777 == 0o600
    assert Path(tls_job.log_path()).parent.stat().st_mode & 0o777 == 0o700
    for pid in job_processes(tls_job.job_id):
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except FileNotFoundError:
            continue  # a short-lived step of the job ended between the listing and the read
        assert "PRIVATE KEY" not in command_line and "key.pem" not in command_line and "--tls" not in command_line


def test_the_owner_attaches_with_nothing_but_the_scheduler_file(tls_job) -> None:
    with connect(tls_job.scheduler_file, n_workers=2, timeout=60) as bridge:
        assert bridge.client.scheduler.address.startswith("tls://127.0.0.1:")
        assert all(address.startswith("tls://") for address in bridge.client.nthreads())
        assert bridge.job == tls_job
        assert bridge.gather(bridge.map(abs, [-3, -4], progress=False)) == [3, 4]
    done = subprocess.run(cli("connect", tls_job.scheduler_file, "--timeout", "60"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "scheduler: tls://" in done.stdout and f"job:       {tls_job.job_id} (local)" in done.stdout


def test_a_plain_tcp_client_is_refused_at_once(tls_job, tmp_path) -> None:
    plain = copy_of(tls_job, tmp_path, "plain.json", tls=None,
                    address=json.loads(Path(tls_job.scheduler_file).read_text())["address"].replace("tls://", "tcp://"))
    message, seconds = refused(cli("connect", str(plain), "--timeout", "20"))
    assert "refused the connection (a scheduler that speaks only TLS closes a plain TCP connection at once)" in message
    print(f"plain tcp client refused, process ended after {seconds:.1f} s")


def test_a_client_without_certificates_is_refused_with_the_reason(tls_job, tmp_path) -> None:
    copy = copy_of(tls_job, tmp_path, "nocert.json", tls=None)
    message, seconds = refused(cli("connect", str(copy), "--timeout", "20"))
    assert "speaks TLS and this client has no certificates" in message, message
    print(f"client without certificates refused, process ended after {seconds:.1f} s")


def test_a_client_of_another_ca_is_refused_with_the_reason(tls_job, tmp_path) -> None:
    other = create_certificates(tmp_path / "other-ca")
    copy = copy_of(tls_job, tmp_path, "other.json",
                   tls={"ca_file": str(other.ca_file), "cert": str(other.cert), "key": str(other.key)})
    message, seconds = refused(cli("connect", str(copy), "--timeout", "20"))
    assert "do not trust each other: the scheduler's certificate is not signed by the CA this client trusts" in message
    # Trusting the cluster's CA but presenting another CA's certificate: the scheduler refuses.
    own = Path(tls_job.scheduler_file).with_name("scheduler.tls")
    mixed = copy_of(tls_job, tmp_path, "mixed.json",
                    tls={"ca_file": str(own / "ca.pem"), "cert": str(other.cert), "key": str(other.key)})
    message, seconds = refused(cli("connect", str(mixed), "--timeout", "20"))
    assert "the scheduler refused this client's certificate" in message, message
    print(f"client of another CA refused, process ended after {seconds:.1f} s")


def test_another_unix_user_is_refused_with_the_reason(tls_job, other_user, open_folder) -> None:
    as_other = python_for(other_user)
    message, _ = refused([*as_other, "-m", "hpcbridge.cli", "connect", tls_job.scheduler_file, "--timeout", "20"])
    assert f"cannot read the scheduler file {tls_job.scheduler_file}: permission denied" in message, message
    # Even told the address and where the certificates are, the user cannot read them.
    own = Path(tls_job.scheduler_file).with_name("scheduler.tls")
    leaked = copy_of(tls_job, open_folder, "leaked.json",
                     tls={"ca_file": str(own / "ca.pem"), "cert": str(own / "cert.pem"), "key": str(own / "key.pem")})
    message, seconds = refused([*as_other, "-m", "hpcbridge.cli", "connect", str(leaked), "--timeout", "20"])
    assert "cannot read the cluster's TLS CA certificate" in message and "permission denied" in message, message
    leaked.unlink()
    print(f"another user refused, process ended after {seconds:.1f} s")


def test_a_copy_of_the_scheduler_file_stands_on_its_own(tls_job, other_user, open_folder, tmp_path) -> None:
    """The file says where the job's certificates are, not where they lie beside it: the owner's copy
    elsewhere attaches, and another user's copy is refused for the true reason, not as stale."""
    recorded = json.loads(Path(tls_job.scheduler_file).read_text())["hpcbridge"]["tls"]
    assert all(os.path.isabs(path) for path in recorded.values()), recorded
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    copy = elsewhere / "copy.json"
    shutil.copy(tls_job.scheduler_file, copy)
    with connect(copy, n_workers=2, timeout=60) as bridge:
        assert bridge.job.job_id == tls_job.job_id
        assert bridge.gather(bridge.map(abs, [-5], progress=False)) == [5]
    done = subprocess.run(cli("connect", str(copy), "--timeout", "60"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and f"job:       {tls_job.job_id} (local)" in done.stdout, done.stderr
    leaked = open_folder / "copied.json"
    shutil.copy(tls_job.scheduler_file, leaked)
    leaked.chmod(0o644)
    try:
        message, _ = refused([*python_for(other_user), "-m", "hpcbridge.cli", "connect", str(leaked), "--timeout", "20"])
    finally:
        leaked.unlink()
    assert f"cannot read the cluster's TLS CA certificate {recorded['ca_file']}: permission denied" in message, message
    assert "stale" not in message and "ended" not in message, message


def test_another_unix_user_cannot_map_a_broadcasts_shared_copy(tls_job, other_user) -> None:
    """The workers of a machine share a broadcast through /proc/PID/fd: the kernel lets only the
    owner (or root) open it. Told exactly where the copy is, another user gets nothing."""
    with connect(job=tls_job, n_workers=2, timeout=60) as bridge:
        handle = bridge.broadcast(np.arange(1000.0))
        places = bridge.client.run(lambda name: asdict(broadcast._SHARED[name].where()), handle.name)
        assert len(places) == 2
        where = next(iter(places.values()))
        script = ("import os\n"
                  "from hpcbridge.cluster import machine_copy\n"
                  f"where = machine_copy.Where(**{where!r})\n"
                  "print(machine_copy.attach(where))\n"
                  "try:\n"
                  "    os.open(f'/proc/{where.pid}/fd/{where.fd}', os.O_RDONLY)\n"
                  "except PermissionError:\n"
                  "    print('permission denied')\n")
        done = subprocess.run([*python_for(other_user), "-c", script], capture_output=True, text=True,
                              timeout=60, cwd="/tmp")
        assert done.returncode == 0, done.stderr
        assert done.stdout.split("\n")[:2] == ["None", "permission denied"], done.stdout
        bridge.release(handle)


def test_tcp_is_still_there_for_who_asks_with_a_warning(tmp_path) -> None:
    done = subprocess.run(cli("render", "--scheduler", "slurm", "--protocol", "tcp"), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert done.stderr.strip() == ("hpcbridge: warning: protocol tcp: the cluster is not encrypted, and anyone who "
                                   "can reach the scheduler's port can run code as you")
    assert "--protocol tcp" in done.stdout and "DASK_DISTRIBUTED__COMM__TLS" not in done.stdout


def test_a_dashboard_open_beyond_its_node_is_there_for_who_asks_with_a_warning() -> None:
    done = subprocess.run(cli("render", "--scheduler", "slurm", "--dashboard-address", "0.0.0.0:8787"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stderr.strip() == ("hpcbridge: warning: --dashboard-address 0.0.0.0:8787: the dashboard listens beyond "
                                   "the scheduler's node, in plain HTTP: its pages (your function and run names, every "
                                   "log line) and the token that opens them cross the network unencrypted (the "
                                   "default, 127.0.0.1:0, is reached through the ssh tunnel hpcbridge dashboard JOB "
                                   "prints)")
    assert "DASHBOARD_ADDRESS=0.0.0.0:8787\n" in done.stdout and "hpcbridge: warning: dashboard address" in done.stdout
    default = subprocess.run(cli("render", "--scheduler", "slurm"), capture_output=True, text=True, timeout=60)
    assert default.stderr == "" and "DASHBOARD_ADDRESS=127.0.0.1:0\n" in default.stdout
    assert '--dashboard-address "$DASHBOARD_ADDRESS"' in default.stdout  # the scheduler's
    assert "--dashboard-address 127.0.0.1:0\n" in default.stdout  # each worker's own pages


def test_cancel_removes_the_scheduler_file_and_the_certificates(tls_job) -> None:
    scheduler_file = Path(tls_job.scheduler_file)
    runs = scheduler_file.parent / "runs"
    runs.mkdir()
    assert tls_job.cancel() is None
    assert not scheduler_file.exists() and not scheduler_file.with_name("scheduler.tls").exists()
    assert runs.is_dir(), "run directories are kept"
    assert wait_for(lambda: tls_job.status().finished, timeout=30)
    assert tls_job.cancel().state == "CANCELLED"  # the second time: already ended, nothing sent
