"""A run directory that cannot be written is said where the user looks, on a real local cluster and a
real tmpfs (mounted by the test, unmounted after it, also when it fails).

During a map (the folder fills up, is deleted, or turns read-only): every result still comes back,
and ``gather`` warns with the path, the reason and how many chunks are only in memory; a folder
that cannot be removed after it is said too. At the start of a map (a full or read-only folder):
one line naming the path and the reason, before anything is submitted, and the name is free
again. A folder deleted (or full), and then the job cancelled: the error counts the items that were
computed (and lost), those saved, says why the others are not on disk, and ``results`` says the
same instead of a ``KeyError``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from hpcbridge.client.bridge import Bridge, connect
from hpcbridge.client.losses import JobCancelled
from hpcbridge.cluster import chunks
from hpcbridge.job import submit as jobs
from hpcbridge.rundir import RunDirectory, RunDirectoryError, RunDirectoryWarning
from tests.conftest import module_bridge, module_local_job, wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below run on the cluster

MB = 1 << 20
GATE_SECONDS = 120


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


def megabyte(x: int) -> bytes:
    return bytes([x % 256]) * MB


def at_gate(x: int, gate: str) -> int:
    deadline = time.monotonic() + GATE_SECONDS
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return x


def slow_megabyte(x: int) -> bytes:
    time.sleep(0.02)
    return megabyte(x)


def nap(x: int) -> int:
    time.sleep(0.02)
    return x


def tasks_and_clients(dask_scheduler=None) -> tuple[int, list[str]]:
    """The scheduler's tasks and connected clients (not the entry distributed keeps for each name ever
    published, "published-<name>": it stays after the name is unpublished)."""
    return len(dask_scheduler.tasks), sorted(c for c in dask_scheduler.clients if not c.startswith("published-"))


def executed(bridge: Bridge, run: str) -> int:
    return sum(counts.get(run, 0) for counts in bridge.client.run(chunks.executed_items).values())


def one_warning(caught: list, *pieces: str) -> str:
    """The one warning whose text holds every piece; it is one line."""
    found = [str(w.message) for w in caught if all(piece in str(w.message) for piece in pieces)]
    assert len(found) == 1, [str(w.message) for w in caught]
    assert "\n" not in found[0]
    return found[0]


def test_a_run_directory_that_fills_up_during_a_map_is_said_at_gather_and_every_result_comes_back(
        cluster, tmp_path: Path) -> None:
    job, _ = cluster
    with tmpfs(tmp_path / "small", "20m") as root, connect(job.scheduler_file, n_workers=2, timeout=60,
                                                         run_directory=root, set_as_default=False) as bridge:
        run = bridge.map(megabyte, range(200), chunk_size=5, name="fills-up", progress=False)  # 200 MB on 20 MB
        with pytest.warns(RunDirectoryWarning) as caught:
            values = bridge.gather(run, progress=False, release=False)
        assert [value[0] for value in values] == [x % 256 for x in range(200)] and {len(v) for v in values} == {MB}
        on_disk = RunDirectory(run.directory).saved()
        unsaved = [bounds for bounds in run.bounds if bounds not in on_disk]
        assert on_disk and unsaved, on_disk  # it took some chunks, then it was full
        one_warning(caught, f"run 'fills-up': {len(unsaved)} of {len(run.bounds)} chunks "
                            f"({5 * len(unsaved)} of 200 items) were not saved in {run.directory}",
                    "No space left on device")
        assert bridge.release(run) and not os.path.exists(run.directory)


def test_a_run_folder_deleted_during_a_map_is_said_at_gather(cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    gate = tmp_path / "gate"
    run = bridge.map(at_gate, range(20), args=(str(gate),), chunk_size=5, name="deleted", progress=False)
    shutil.rmtree(run.directory)  # a scratch purge, or a user's rm -r, while the chunks run
    gate.touch()
    with pytest.warns(RunDirectoryWarning) as caught:
        assert bridge.gather(run, progress=False) == list(range(20))
    one_warning(caught, f"run 'deleted': 4 of 4 chunks (20 of 20 items) were not saved in {run.directory}",
                "No such file or directory")
    assert not os.path.exists(run.directory)


def test_a_run_folder_made_read_only_during_a_map_is_said_at_gather_and_so_is_the_folder_left(
        cluster, tmp_path: Path) -> None:
    job, _ = cluster
    gate = tmp_path / "gate"
    with tmpfs(tmp_path / "turns-ro", "20m") as root, connect(job.scheduler_file, n_workers=2, timeout=60,
                                                            run_directory=root, set_as_default=False) as bridge:
        run = bridge.map(at_gate, range(20), args=(str(gate),), chunk_size=5, name="read-only", progress=False)
        read_only(root)
        gate.touch()
        with pytest.warns(RunDirectoryWarning) as caught:
            assert bridge.gather(run, progress=False) == list(range(20))
        one_warning(caught, f"run 'read-only': 4 of 4 chunks (20 of 20 items) were not saved in {run.directory}",
                    "Read-only file system")
        one_warning(caught, f"run 'read-only': its run directory {run.directory} could not be removed",
                    "Read-only file system")
        assert "read-only" not in bridge.runs()  # collected and released all the same


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


@pytest.mark.parametrize("trouble", ["deleted", "full"])
def test_a_run_whose_folder_failed_then_whose_job_was_cancelled_counts_what_was_computed_and_saved(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, trouble: str) -> None:
    with module_local_job(tmp_path_factory, 2) as job, contextlib.ExitStack() as stack:
        root = stack.enter_context(tmpfs(tmp_path / "small", "20m")) if trouble == "full" else None
        bridge = stack.enter_context(connect(job.scheduler_file, n_workers=2, timeout=60, run_directory=root))
        run = bridge.map(nap if trouble == "deleted" else slow_megabyte, range(400), chunk_size=8, name="gone",
                         progress=False)
        if trouble == "deleted":
            shutil.rmtree(run.directory)
        assert wait_for(lambda: run.done_items() >= 160, 60, 0.05)
        ran = executed(bridge, "gone")
        job.cancel()
        with pytest.raises(JobCancelled) as cancelled:
            bridge.gather(run, progress=False)
        lost = cancelled.value
        on_disk = RunDirectory(run.directory).saved_items()
        assert lost.saved == lost.done == on_disk == sum(value is not None for value in lost.results)
        assert (on_disk == 0) if trouble == "deleted" else (0 < on_disk < 160), on_disk  # 8 MB chunks on 20 MB
        # Counted as executed once a chunk's items have run, before it is saved and returned: a chunk of each
        # worker may have been saving when the job was cancelled (its items ran, the chunk never finished).
        assert ran - 2 * 8 <= lost.computed <= 400 and lost.computed % 8 == 0, (ran, lost.computed)
        message = str(lost)
        assert (f"{lost.computed} of 400 items were computed, {on_disk} saved in {run.directory} (saving there "
                f"failed: ") in message, message
        assert {"deleted": "No such file or directory", "full": "No space left on device"}[trouble] in message
        assert f"; {lost.computed - on_disk} were lost with the cluster before they were saved" in message
        with pytest.raises(JobCancelled) as again:  # not a KeyError: the bridge knows the run it started
            bridge.results("gone", progress=False)
        assert (again.value.computed, again.value.saved, again.value.missing) == (lost.computed, on_disk, lost.missing)
