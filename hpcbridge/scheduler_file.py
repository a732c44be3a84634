"""The scheduler file: what a job publishes about its cluster, and the rules for reading and replacing it.

Dask's scheduler writes its address (and more) to a file; the job script adds an ``hpcbridge``
section and renames the result into place, so a reader sees the whole file or none::

    {"address": "tls://10.77.0.1:40123", ...Dask's fields...,
     "hpcbridge": {"job_id": "42", "scheduler": "slurm", "cluster": "9f3c...",
                   "folder": "/home/me/.hpcbridge/jobs/42",
                   "tls": {"ca_file": "/home/me/.hpcbridge/jobs/42/scheduler.tls/ca.pem", ...}}}

``cluster`` is a random identity made at each start of the job (a requeued job is a new
cluster under the same job id). The file stands on its own: certificate paths are absolute, so
a copy of the file elsewhere (``cp`` to another folder, a mail to oneself) reaches the same
certificates, and a user who may not read them is told so. ``folder`` is where the job wrote
the file, as the job saw it: a client that mounts the shared filesystem elsewhere, and finds
nothing at the recorded paths, looks for them at the same place under the file's own folder.
With per-job certificates the folder holds them in :func:`certificate_dir`; files written by
plain Dask (or by dask-mpi in mpi mode) have no ``hpcbridge`` section and are still read, and
older files with paths relative to their folder are read as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcbridge.addresses import address_answers
from hpcbridge.private_files import write_private_file
from hpcbridge.tls import Certificates, certificates_in


class SchedulerFileError(ValueError):
    """A scheduler file that exists but cannot be used (unreadable, not JSON, no address)."""


class SchedulerFileInUse(FileExistsError):
    """The scheduler file of a cluster that is still running: it is not replaced or deleted."""


@dataclass(frozen=True)
class Dashboard:
    """Where a cluster's dashboard listens: on ``node`` (its host name there), at ``host`` (``127.0.0.1``
    by default; ``""`` for every interface), on ``port``; ``token`` opens it (once, in its link).
    ``node`` and ``token`` are None for files that do not say."""

    node: str | None
    host: str
    port: int
    token: str | None = None


@dataclass(frozen=True)
class ClusterInfo:
    """What a scheduler file says: the scheduler's address and, when the job wrote them, its job and certificates."""

    path: Path
    address: str
    job_id: str | None = None
    scheduler: str | None = None
    cluster: str | None = None
    certificates: Certificates | None = None
    dashboard: Dashboard | None = None

    @property
    def describes_job(self) -> bool:
        """True when the file names the batch job that wrote it."""
        return self.job_id is not None and self.scheduler is not None

    def job_label(self) -> str:
        """``job 42 (slurm)``, or ``an unknown job`` for a file without an hpcbridge section."""
        return f"job {self.job_id} ({self.scheduler})" if self.describes_job else "an unknown job (plain Dask)"


def certificate_dir(scheduler_file: str | os.PathLike[str]) -> Path:
    """Where a job keeps its own certificates: ``scheduler.json`` → ``scheduler.tls/`` beside it.

    >>> str(certificate_dir("/s/jobs/42/scheduler.json")), str(certificate_dir("/s/cluster"))
    ('/s/jobs/42/scheduler.tls', '/s/cluster.tls')
    """
    path = Path(scheduler_file).expanduser()
    return path.with_name(path.name.removesuffix(".json") + ".tls")


def read(path: str | os.PathLike[str]) -> ClusterInfo:
    """Read a scheduler file; ``FileNotFoundError`` when it is not there yet.

    Raises :class:`SchedulerFileError` for a file that cannot be read (another user's, say),
    is not JSON, or holds no scheduler address.
    """
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise
    except PermissionError:
        raise SchedulerFileError(f"cannot read the scheduler file {path}: permission denied ({_owner(path)}); "
                                 "a cluster's scheduler file is readable by its owner only") from None
    except OSError as error:
        raise SchedulerFileError(f"cannot read the scheduler file {path}: {error.strerror or error}") from None
    try:
        info = json.loads(text)
    except ValueError as error:
        raise SchedulerFileError(f"{path} is not a scheduler file: invalid JSON ({error})") from None
    if not isinstance(info, dict) or not isinstance(info.get("address"), str) or not info["address"]:
        raise SchedulerFileError(f"{path} is not a scheduler file: it holds no scheduler address")
    return _cluster_info(path, info)


def _cluster_info(path: Path, info: dict[str, Any]) -> ClusterInfo:
    section = info.get("hpcbridge") if isinstance(info.get("hpcbridge"), dict) else {}
    tls = section.get("tls")
    certificates = None
    if isinstance(tls, dict) and all(isinstance(tls.get(key), str) for key in ("ca_file", "cert", "key")):
        folder = section.get("folder") if isinstance(section.get("folder"), str) else None
        certificates = Certificates(*(_locate(path, folder, tls[key]) for key in ("ca_file", "cert", "key")))
    elif info["address"].startswith("tls://") and certificate_dir(path).exists():
        certificates = certificates_in(certificate_dir(path))
    text = {key: str(section[key]) if section.get(key) is not None else None for key in ("job_id", "scheduler", "cluster")}
    return ClusterInfo(path=path, address=info["address"], certificates=certificates,
                       dashboard=_dashboard(info, section), **text)


def _dashboard(info: dict[str, Any], section: dict[str, Any]) -> Dashboard | None:
    """The dashboard the job recorded, or the port Dask's own fields name (listening on every interface then)."""
    recorded = section.get("dashboard")
    if isinstance(recorded, dict) and isinstance(recorded.get("port"), int) and isinstance(recorded.get("host"), str):
        node, token = recorded.get("node"), recorded.get("token")
        return Dashboard(node if isinstance(node, str) and node else None, recorded["host"], recorded["port"],
                         token if isinstance(token, str) and token else None)
    services = info.get("services")
    port = services.get("dashboard") if isinstance(services, dict) else None
    return Dashboard(None, "", port) if isinstance(port, int) and not isinstance(port, bool) else None


def _locate(path: Path, folder: str | None, recorded: str) -> Path:
    """Where a certificate the file names is, for a reader of the file at ``path``.

    The recorded absolute path, unless nothing is there and the file's own folder holds the same
    place under the job's ``folder`` (the shared filesystem mounted elsewhere). A relative path
    (files of earlier versions) is taken relative to the file's folder. Never a guess beyond that:
    a path this reader may not look at stays the recorded one, so opening it says why.

    >>> str(_locate(Path("/copy/s.json"), "/jobs/42", "/jobs/42/s.tls/ca.pem"))
    '/jobs/42/s.tls/ca.pem'
    >>> str(_locate(Path("/copy/s.json"), None, "s.tls/ca.pem"))
    '/copy/s.tls/ca.pem'
    """
    given = Path(recorded).expanduser()
    if not given.is_absolute():
        return path.parent / given
    if folder and not os.path.exists(given):
        try:
            inside = given.relative_to(folder)
        except ValueError:
            return given
        if os.path.exists(path.parent / inside):
            return path.parent / inside
    return given


def remove(path: str | os.PathLike[str], job_id: str | None = None) -> bool:
    """Remove a scheduler file and its job's certificates; with ``job_id``, only if that job wrote it.

    Run directories beside the file (``runs/``) are kept. Returns True when something was removed.
    """
    path = Path(path).expanduser()
    try:
        info = read(path)
    except FileNotFoundError:
        info = None
    except SchedulerFileError:
        info = None
        if job_id is not None:
            return False
    if job_id is not None and info is not None and info.job_id is not None and info.job_id != str(job_id):
        return False
    removed = False
    for leftover in (path, path.with_name(path.name + ".dask")):
        if leftover.exists():
            leftover.unlink(missing_ok=True)
            removed = True
    folder = certificate_dir(path)
    if folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)
        removed = True
    owner = job_id if job_id is not None else (info.job_id if info is not None else None)
    if owner is not None and path.parent.name == str(owner):
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # the job's own folder ({job_id}/scheduler.json), once nothing else is in it
    return removed


# Whether the job a scheduler file names still runs, and its state in words (None and the reason
# when the batch system cannot be asked). The caller asks the batch system: backends sit above this module.
JobCheck = Callable[[ClusterInfo], "tuple[bool | None, str]"]


def claim(path: str | os.PathLike[str], job_running: JobCheck, default: str) -> None:
    """Make ``path`` free for a new cluster before its job is submitted: remove a stale file (and its
    certificates), refuse one that a live cluster uses with :class:`SchedulerFileInUse`.

    ``default`` is the one-per-job scheduler file to suggest instead.
    """
    path = Path(path).expanduser()
    try:
        info = read(path)
    except FileNotFoundError:
        remove(path)  # certificates of a job that left no file
        return
    except SchedulerFileError as error:
        raise SchedulerFileInUse(f"{error}; hpcbridge does not replace it: remove it or choose another "
                                 "--scheduler-file") from None
    if info.describes_job:
        running, state = job_running(info)
        if running is None:
            raise SchedulerFileInUse(
                f"{path} belongs to {info.job_label()}, whose state cannot be checked ({state}); "
                "it is not replaced: choose another --scheduler-file")
        if running:
            raise SchedulerFileInUse(
                f"{path} belongs to {info.job_label()}, which is still {state}: choose another "
                f"--scheduler-file (the default, {default}, is one per job) or cancel job {info.job_id} first")
    elif address_answers(info.address):
        raise SchedulerFileInUse(
            f"{path} belongs to a running scheduler at {info.address} (a cluster hpcbridge did not start): "
            "choose another --scheduler-file")
    remove(path)


def publish(path: str | os.PathLike[str], identity: dict[str, Any], section: dict[str, Any]) -> None:
    """Write the scheduler file as every hpcbridge cluster does: Dask's fields (the scheduler's
    ``identity()``) plus the ``hpcbridge`` section, owner-only, put in place with one rename so that
    nobody reads half a file. Certificate paths are written absolute and the file's folder is
    recorded, so that a copy of the file stands on its own."""
    path = Path(path)
    section = {**section, "folder": str(path.parent.absolute())}
    tls = section.get("tls")
    if tls:
        section["tls"] = {key: os.path.abspath(os.path.expanduser(value)) for key, value in tls.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, json.dumps({**identity, "hpcbridge": section}, indent=2, default=str))


def _owner(path: Path) -> str:
    try:
        import pwd

        stat = path.stat()
        return f"owned by {pwd.getpwuid(stat.st_uid).pw_name}, mode {stat.st_mode & 0o777:04o}"
    except (OSError, KeyError):
        return "its folder is not open to you"
