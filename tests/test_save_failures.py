"""A run directory that cannot be written is said where the user looks, on a real local cluster and a
real tmpfs (mounted by the test, unmounted after it, also when it fails).

At the start of a map (a full or read-only folder): one line naming the path and the reason, before
anything is submitted, and the name is free again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from hpcbridge.client.bridge import Bridge, connect
from hpcbridge.job import submit as jobs
from hpcbridge.rundir import RunDirectoryError
from tests.conftest import module_bridge

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below run on the cluster

MB = 1 << 20


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    """A 2-worker local job shared by this module's tests."""
    with module_bridge(tmp_path_factory, 2) as attached:
        yield attached


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (made if missing); unmounted after, also on failure."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True,
                   timeout=30)
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=30).returncode != 0:
            subprocess.run(["umount", "--lazy", str(path)], check=True, timeout=30)  # still busy: detach it
        assert not os.path.ismount(path)


def read_only(path: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, timeout=30)


def fill(path: Path) -> None:
    """Write into ``path`` until its file system has no space left."""
    with open(path / "filler", "wb") as filler:
        block = bytes(MB)
        with pytest.raises(OSError) as full:
            while True:
                filler.write(block)
                filler.flush()
    assert full.value.errno == errno.ENOSPC


def tasks_and_clients(dask_scheduler=None) -> tuple[int, list[str]]:
    """The scheduler's tasks and connected clients (not the entry distributed keeps for each name ever
    published, "published-<name>": it stays after the name is unpublished)."""
    return len(dask_scheduler.tasks), sorted(c for c in dask_scheduler.clients if not c.startswith("published-"))



@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_a_map_on_a_run_directory_that_cannot_be_written_is_one_line_at_once_and_leaves_nothing(
        cluster, tmp_path: Path, trouble: str) -> None:
    job, _ = cluster
    with tmpfs(tmp_path / trouble, "2m") as root, connect(job.scheduler_file, n_workers=2, timeout=60,
                                                        run_directory=root, set_as_default=False) as bridge:
        if trouble == "full":
            fill(root)
        else:
            read_only(root)
        before, left = bridge.client.run_on_scheduler(tasks_and_clients), sorted(os.listdir(root))
        with pytest.raises(RunDirectoryError) as refused:
            bridge.map(abs, range(10), name="refused", progress=False)
        message, reason = str(refused.value), {"full": "No space left on device",
                                               "read-only": "Read-only file system"}[trouble]
        assert "\n" not in message and message.startswith(f"run directory {root / 'refused'} cannot be written: ")
        assert reason in message and "save=False" in message
        assert isinstance(refused.value, OSError) and refused.value.errno == {
            "full": errno.ENOSPC, "read-only": errno.EROFS}[trouble]
        assert bridge.client.run_on_scheduler(tasks_and_clients) == before  # nothing submitted, no client left
        assert sorted(os.listdir(root)) == left and "refused" not in bridge.runs()  # no folder, the name free
        run = bridge.map(abs, range(-3, 0), name="refused", save=False, progress=False)
        assert bridge.gather(run, progress=False) == [3, 2, 1]
