"""Shared fixtures: a private hpcbridge home, and local jobs that are always cleaned up.

At the end of the session a check fails the run when anything the tests made is left: a
process (every process the tests start, down to Dask workers in Slurm jobs, inherits
``HPCBRIDGE_TEST_SESSION``), a folder, a network namespace or a Unix user that a test
registered with :func:`register_leftover_check`.

The suite runs its test files on two pytest-xdist workers (``-n 2 --dist loadfile``; most
cluster tests wait on Slurm rather than compute, and each file starts its own harness, which
takes a free subnet and free ports beside another). Every worker inherits the session marker
and appends to one registry file, so the check runs once, in the controlling process, after
every worker has finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.job import submit as jobs
from hpcbridge.job.spec import JobSpec

# A client script for mpi-mode jobs: it attaches through the job's scheduler file, computes the
# prime-factor sum over [2, 10000) (10218029) and writes what it saw to the file named by argv[1].
CLIENT_SCRIPT = """\
import json, os, sys
import hpcbridge
from hpcbridge.workloads.primes import split_range, sum_prime_factors

with hpcbridge.connect(os.environ["HPCBRIDGE_SCHEDULER_FILE"], n_workers=int(os.environ["HPCBRIDGE_WORKERS"]),
                       timeout=60) as bridge:
    total = sum(bridge.gather(bridge.map(sum_prime_factors, split_range(2, 10_000, 8))))
    report = {"argv": sys.argv[1:], "workers": bridge.n_workers, "total": total,
              "nthreads": sorted(bridge.client.nthreads().values())}
with open(sys.argv[1], "w") as out:
    json.dump(report, out)
"""


SESSION = os.environ.setdefault("HPCBRIDGE_TEST_SESSION", secrets.token_hex(8))
# One file for the whole session, xdist workers included (they inherit the marker above).
_REGISTRY = Path(tempfile.gettempdir()) / f"hpcbridge-test-{SESSION}.leftovers"


def register_leftover_check(kind: str, name: str | os.PathLike[str]) -> None:
    """Ask the session-end check to verify that this ``dir``, ``cluster`` (a harness folder) or ``user`` is gone."""
    with open(_REGISTRY, "a") as registry:  # one short appended line: workers never interleave
        registry.write(f"{kind}\t{name}\n")


def _registered() -> list[tuple[str, str]]:
    try:
        lines = _REGISTRY.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [tuple(line.split("\t", 1)) for line in lines if "\t" in line]  # type: ignore[misc]


def session_processes() -> list[int]:
    """Live processes (not zombies) that carry this session's marker, other than this one and its xdist workers.

    A process a test started is never a child of the controlling pytest: when its xdist worker
    exits, it is left to init.
    """
    marker = f"HPCBRIDGE_TEST_SESSION={SESSION}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                state, parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:2]
                if state != "Z" and int(parent) != os.getpid():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def leftovers() -> list[str]:
    """What this session made and did not remove."""
    left = []
    deadline = time.monotonic() + 15  # processes a last teardown signalled may need a moment
    while (pids := session_processes()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        left.append(f"process {pid}: {command[:160]}")
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for kind, name in _registered():
        if kind in ("dir", "cluster") and Path(name).exists():
            left.append(f"folder {name}")
        if kind == "cluster":
            short = hashlib.sha1(str(Path(name).resolve()).encode()).hexdigest()[:6]
            prefixes = (f"hpcb-{short}-", f"hpcp-{short}-", f"hpcg-{short}-")  # slurm-, pbs- and sge-cluster's
            left += [f"network namespace {line.split()[0]}" for line in namespaces.splitlines()
                     if line.startswith(prefixes)]
        if kind == "user":
            try:
                pwd.getpwnam(name)
                left.append(f"user {name}")
            except KeyError:
                pass
    return left


def _interrupt_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum} (SIGTERM)")


# This machine's root shell runs `pyenv init -` (~/.bashrc), which rehashes pyenv's shims under a lock
# file. A login shell killed by SIGKILL in that moment (a cancelled job's shell on a PBS mom, a
# harness's nodes torn down, an ssh session) leaves the lock behind, and every later login shell
# (PBS jobs, Grid Engine's qrsh, sshd's commands) then waits 60 s for it: jobs that "never start"
# in every later test. A rehash takes milliseconds, so a lock older than this is stale.
_STALE_PYENV_LOCK_SECONDS = 20.0


def _clear_stale_pyenv_locks(lock: Path) -> None:
    """Remove ``lock`` (pyenv's rehash lock) whenever it is older than a rehash can take; runs for the session."""
    while True:
        try:
            if time.time() - lock.stat().st_mtime > _STALE_PYENV_LOCK_SECONDS:
                lock.unlink(missing_ok=True)
        except OSError:
            pass
        time.sleep(2.0)


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (``timeout``, a cancelled CI run) stops the session like Ctrl-C does: fixtures are torn
    down (local jobs cancelled, harnesses stopped) and the leftover check runs, instead of the
    process dying with its jobs' schedulers and workers left running."""
    signal.signal(signal.SIGTERM, _interrupt_on_sigterm)
    shims = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "shims"
    if shims.is_dir():
        threading.Thread(target=_clear_stale_pyenv_locks, args=(shims / ".pyenv-shim",), daemon=True,
                         name="stale pyenv lock").start()
    _count_new_clients()
    if not os.environ.get("HPCBRIDGE_SLOT_DIRECTORY"):
        # The workers' chunk slots (hpcbridge.cluster.attempts) outlive a killed worker by design; the
        # tests keep theirs in a folder of the session's, removed at its end, not in /dev/shm.
        slots = tempfile.mkdtemp(prefix="hpcbridge-test-slots-")
        os.chmod(slots, 0o1777)  # like /tmp: each user's slots are in a 0700 folder of their own inside
        os.environ["HPCBRIDGE_SLOT_DIRECTORY"] = slots
        config.stash[_SLOTS] = slots


_SLOTS = pytest.StashKey[str]()


# Clients made while a test's body runs. One left open would be closed by the garbage collector,
# whenever it runs: distributed's Client.__del__ then stops its event loop under a lock that is not
# reentrant, and a collection that starts while another client holds that lock (starting or
# stopping its loop) waits forever: a CI run hung that way for 70 minutes. So a test's clients that
# are still open after its teardown are kept referenced (never collected) and closed at the end of
# the module (a client left open would also stay Dask's default client for the next modules). Some
# stay open by design: MATLAB's toolbox keeps its client for the next call, within a module.
_CALL_CLIENTS: weakref.WeakSet | None = None
_CLIENTS = pytest.StashKey[weakref.WeakSet]()
_KEPT_OPEN: list = []


def _count_new_clients() -> None:
    from distributed import Client

    original = Client.__init__

    def counted(self, *args, **kwargs):
        if _CALL_CLIENTS is not None:
            _CALL_CLIENTS.add(self)
        original(self, *args, **kwargs)

    Client.__init__ = counted


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    global _CALL_CLIENTS
    _CALL_CLIENTS = item.stash[_CLIENTS] = weakref.WeakSet()
    try:
        return (yield)
    finally:
        _CALL_CLIENTS = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None):
    try:
        return (yield)
    finally:
        _KEPT_OPEN.extend(client for client in item.stash.get(_CLIENTS, ())
                          if client.status not in ("closed", "newly-created"))
        if nextitem is None or nextitem.path != item.path:  # the module is done, its fixtures too
            _close_kept_open()


def _close_kept_open() -> None:
    """Close the clients the tests left open (here, not in a garbage collection: see above)."""
    for client in _KEPT_OPEN:
        with contextlib.suppress(Exception):
            client.close(timeout=5)
    _KEPT_OPEN.clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when anything of ours remains; end leftover processes (ours, by PID)."""
    _close_kept_open()
    slots = session.config.stash.get(_SLOTS, None)
    if slots is not None:
        shutil.rmtree(slots, ignore_errors=True)
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller checks once every worker is done
    left = leftovers()
    _REGISTRY.unlink(missing_ok=True)
    if not left:
        return
    for pid in session_processes():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["the tests left these behind (processes were killed):", *(f"  {item}" for item in left)]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    else:
        print("\n".join(lines), file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def worker_tls_env(scheduler_file: str | os.PathLike[str]) -> dict[str, str]:
    """The environment a Dask worker started by a test needs to join the job's TLS cluster (its certificates)."""
    from hpcbridge import scheduler_file as files

    certificates = files.read(scheduler_file).certificates
    if certificates is None:
        return {}
    return {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(certificates.ca_file),
            "DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT": str(certificates.cert),
            "DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY": str(certificates.key)}


def job_processes(job_id: str) -> list[int]:
    """PIDs of live processes started by a local job (they carry HPCBRIDGE_JOB_ID in their environment)."""
    marker = f"HPCBRIDGE_JOB_ID={job_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def wait_for(condition, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``condition`` until it is true or ``timeout`` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while not (result := condition()) and time.monotonic() < deadline:
        time.sleep(interval)
    return bool(result)


@pytest.fixture(autouse=True)
def hpcbridge_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep every test's local job records out of the real home directory."""
    home = tmp_path_factory.mktemp("hpcbridge-home")
    monkeypatch.setenv("HPCBRIDGE_HOME", str(home))
    return home


@pytest.fixture
def local_jobs() -> Iterator[list[jobs.SubmittedJob]]:
    """A list to append submitted local jobs to; each is cancelled and its processes checked gone."""
    started: list[jobs.SubmittedJob] = []
    yield started
    for job in started:
        if not job.status().finished:
            job.cancel()
        assert wait_for(lambda: not job_processes(job.job_id), timeout=30), (
            f"processes of {job.job_id} still running: {job_processes(job.job_id)}")


@contextlib.contextmanager
def module_local_job(tmp_path_factory: pytest.TempPathFactory, workers: int,
                     **spec: object) -> Iterator[jobs.SubmittedJob]:
    """A local job of ``workers`` one-thread workers for a whole test module (more ``JobSpec`` fields in
    ``spec``, e.g. ``mem``); cancelled and checked gone after."""
    folder = tmp_path_factory.mktemp("local-job")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HPCBRIDGE_HOME", str(folder / "home"))
        spec = {"cpus_per_task": 1, **spec}  # one thread per worker unless the module asks for more
        job = jobs.submit(JobSpec(scheduler="local", ntasks_per_node=workers, python=sys.executable,
                                  scheduler_file=str(folder / "{job_id}" / "scheduler.json"), **spec))
        try:
            yield job
        finally:
            job.cancel()
            assert wait_for(lambda: not job_processes(job.job_id), timeout=30)


@contextlib.contextmanager
def module_bridge(tmp_path_factory: pytest.TempPathFactory, workers: int,
                  **spec: object) -> Iterator[tuple[jobs.SubmittedJob, object]]:
    """:func:`module_local_job` with a bridge attached once all its ``workers`` joined: ``(job, bridge)``."""
    from hpcbridge.client.bridge import connect

    with module_local_job(tmp_path_factory, workers, **spec) as job, \
            connect(job.scheduler_file, n_workers=workers, timeout=60) as bridge:
        yield job, bridge


@pytest.fixture
def local_spec(tmp_path: Path):
    """Build a local spec whose Python is this interpreter and whose scheduler file is private."""

    def make(**values) -> JobSpec:
        values.setdefault("python", sys.executable)
        values.setdefault("scheduler_file", str(tmp_path / "{job_id}" / "scheduler.json"))
        return JobSpec(scheduler="local", **values)

    return make
