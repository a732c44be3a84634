"""Owner-only folders and files: what hpcbridge writes is readable by its owner alone.

A scheduler file tells whoever reads it where to send code that runs as the cluster's owner,
and the certificates beside it let them in; so every folder hpcbridge makes is 0700 and every
file 0600, from the moment it exists (never created open and tightened afterwards).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

WRITE_CHUNK = 1 << 30  # bytes per positioned write
DEFAULT_HOME = "~/.hpcbridge"


def state_home(kind: str) -> Path:
    """Where hpcbridge keeps its own files of one kind (``submitted``, ``local``, ``pbs``, ``adaptive``, ...):
    ``$HPCBRIDGE_HOME/<kind>``, by default under ``~/.hpcbridge``. The one place that reads the variable."""
    return Path(os.environ.get("HPCBRIDGE_HOME", DEFAULT_HOME)).expanduser() / kind


def scheduler_files_home() -> Path:
    """Where scheduler files go by default, one folder per job: ``$HPCBRIDGE_HOME/jobs``.

    The one place for them: a submitted job's (``~/.hpcbridge/jobs/{job_id}/scheduler.json``, as its
    script spells it) and a local cluster's for the demo, examples and benchmarks alike.
    """
    return state_home("jobs")


def make_private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` and any missing parents as 0700 folders; make ``path`` itself 0700.

    Parents that exist already (``/scratch/me``, the home directory) are left as they are.
    """
    target = Path(path).expanduser()
    missing = []
    for folder in (target, *target.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass
    target.chmod(0o700)
    return target


def write_private_file(path: str | os.PathLike[str], data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write ``data`` to ``path`` atomically as a 0600 file: readers see the old file or the whole new one.

    ``data`` may also be a function that writes into the open file (``lambda file: np.save(file, a)``).
    """
    target = Path(path).expanduser()
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            if callable(data):
                data(stream)
            else:
                stream.write(data.encode() if isinstance(data, str) else data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def open_private_log(path: str | os.PathLike[str]):
    """Open ``path`` for writing (binary) as a 0600 file, created if missing."""
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def write_at(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` into the open file ``fd`` at ``offset`` (positioned writes, repeated
    until all is written: one call may write less, at most about 2 GiB on Linux)."""
    view = memoryview(data).cast("B")
    while view.nbytes:
        written = os.pwrite(fd, view[:WRITE_CHUNK], offset)
        view, offset = view[written:], offset + written
