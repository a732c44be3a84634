"""Runs on disk (hpcbridge/rundir.py) on a real local cluster: saved as they finish, owner-only,
read back when the cluster no longer holds them, resumed by a later map of the same name."""

from __future__ import annotations

import operator
import os
import pickle
import signal
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from hpcbridge import chunk_log
from hpcbridge.client import runs
from hpcbridge.client.bridge import Bridge, connect
from hpcbridge.client.losses import RunLost
from hpcbridge.cluster import chunks
from hpcbridge.job import submit as jobs
from hpcbridge.rundir import RunDirectory, RunMismatchError, missing_ranges
from tests.conftest import module_local_job, wait_for
from tests.test_bridge_map import cluster, executed  # noqa: F401 (the module's 2-worker job, counted runs)

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below run on the cluster


def square(x: int) -> int:
    return x * x


def cube(x: int) -> int:
    return x * x * x


def row_of(x: int) -> np.ndarray:
    return np.full(3, x, dtype=np.int64)


def forget_on_cluster(bridge: Bridge, name: str) -> None:
    """What a cluster that ended does to a run: it no longer holds it (the folder stays)."""
    runs.release(bridge.client, name)


def logs(directory: str) -> list[Path]:
    """The workers' logs of saved chunks in a run folder."""
    return sorted(Path(directory).glob(f"*{chunk_log.SUFFIX}"))


def drop_saved(directory: str, lost: list[tuple[int, int]]) -> None:
    """What losing chunks from disk looks like: their records taken out of the workers' logs."""
    for path in logs(directory):
        data = path.read_bytes()
        path.write_bytes(b"".join(data[record.offset - chunk_log.HEADER:record.offset + record.length]
                                  for record in chunk_log.read_records(str(path))
                                  if (record.low, record.high) not in lost))


def test_chunks_are_saved_as_they_finish_owner_only_beside_the_scheduler_files(cluster) -> None:
    job, bridge = cluster
    assert bridge.run_root == str(Path(job.scheduler_file).parent.parent / "runs")
    run = bridge.map(square, range(5000), name="saved", progress=False)
    assert bridge.gather(run, progress=False, release=False) == [x * x for x in range(5000)]
    folder = RunDirectory(run.directory)
    assert folder.saved() == run.bounds and missing_ranges(5000, folder.saved()) == []
    manifest = folder.manifest()
    assert manifest["n_items"] == 5000 and manifest["bounds"] == [list(b) for b in run.bounds]
    assert manifest["function"].startswith(f"{__name__}:square#")
    for path in [Path(run.directory), Path(run.directory).parent]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in Path(run.directory).iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    bridge.release("saved")  # the cluster forgets it, and the folder goes
    assert not os.path.exists(run.directory) and "saved" not in bridge.runs()


def test_save_false_writes_nothing(cluster) -> None:
    _, bridge = cluster
    run = bridge.map(square, range(100), name="unsaved", save=False, progress=False)
    assert run.directory is None
    assert bridge.gather(run, progress=False) == [x * x for x in range(100)]
    assert not os.path.exists(os.path.join(bridge.run_root, "unsaved"))


def test_a_run_the_cluster_no_longer_holds_resumes_computing_only_the_missing_chunks(cluster) -> None:
    _, bridge = cluster
    run = bridge.map(square, range(20_000), name="resumed", chunk_size=1000, progress=False)  # 20 chunks to lose some of
    bridge.gather(run, progress=False, release=False)
    forget_on_cluster(bridge, "resumed")
    lost = run.bounds[1:4] + run.bounds[-2:]
    drop_saved(run.directory, lost)
    n_lost = sum(high - low for low, high in lost)
    with pytest.raises(RunLost) as missing:  # results from disk alone: says what is missing, keeps the rest
        bridge.results("resumed", progress=False)
    assert missing.value.missing == lost and missing.value.n_missing == n_lost
    assert missing.value.done == 20_000 - n_lost and missing.value.saved == 20_000 - n_lost
    assert "map(fn, items, name='resumed')" in str(missing.value)
    expected = [x * x for x in range(20_000)]
    kept = set(missing.value.missing_items())
    assert [v for i, v in enumerate(missing.value.results) if i not in kept] == [
        v for i, v in enumerate(expected) if i not in kept]

    before = executed(bridge, "resumed")
    again = bridge.map(square, range(20_000), name="resumed", progress=False)
    assert bridge.gather(again, progress=False) == expected
    assert executed(bridge, "resumed") - before == n_lost  # only the missing items ran
    assert not os.path.exists(run.directory)  # gathered and released: the folder is gone


def test_a_chunk_saved_whole_beside_the_pieces_of_its_rest_is_read_back_once(cluster) -> None:
    """A client cut chunk 0..999 at 400 and handed 400..999 on as two new chunks, but the worker running
    it died and its retry (no nanny left to say where it was) computed and saved it whole: the folder
    holds 0..999 and also 400..699 and 700..999. Read from disk, and resumed, every item comes back
    once, in its place (reading every record as a chunk gave 600 items twice)."""
    _, bridge = cluster
    run = bridge.map(square, range(5000), name="overlapping", chunk_size=1000, progress=False)
    bridge.gather(run, progress=False, release=False)
    forget_on_cluster(bridge, "overlapping")
    directory = RunDirectory(run.directory)
    for low, high in ((400, 700), (700, 1000)):
        directory.save_chunk(low, high, [square(x) for x in range(low, high)])
    directory.write_manifest({**directory.manifest(), "bounds": [(0, 400), (400, 700), (700, 1000),
                                                                 *run.bounds[1:]]})
    expected = [square(x) for x in range(5000)]
    assert bridge.results("overlapping", progress=False, release=False) == expected
    drop_saved(run.directory, [(4000, 5000)])
    before = executed(bridge, "overlapping")
    again = bridge.map(square, range(5000), name="overlapping", progress=False)
    assert bridge.gather(again, progress=False) == expected
    assert executed(bridge, "overlapping") - before == 1000  # only the missing chunk ran


def test_the_same_name_for_another_function_or_other_items_is_refused(cluster) -> None:
    _, bridge = cluster
    bridge.gather(bridge.map(square, range(50), name="taken", progress=False), progress=False, release=False)
    forget_on_cluster(bridge, "taken")
    with pytest.raises(RunMismatchError, match=r"name: 'taken' is a run in .* of function .*:square#"):
        bridge.map(cube, range(50), name="taken", progress=False)
    with pytest.raises(RunMismatchError, match="over other items"):
        bridge.map(square, range(51), name="taken", progress=False)
    assert bridge.results("taken", progress=False) == [x * x for x in range(50)]  # all on disk: no error


def test_stacked_runs_are_saved_as_npy_and_read_back_as_one_array(cluster) -> None:
    _, bridge = cluster
    run = bridge.map(row_of, range(300), name="stacked", stack=True, chunk_size=100, progress=False)
    bridge.gather(run, stack=True, progress=False, release=False)
    folder = RunDirectory(run.directory)
    assert folder.saved() == [(0, 100), (100, 200), (200, 300)]
    assert {copies[0].kind for copies in folder.index().chunks.values()} == {chunk_log.CHUNK_NPY}
    forget_on_cluster(bridge, "stacked")
    values = bridge.results("stacked", stack=True, progress=False)
    np.testing.assert_array_equal(values, np.repeat(np.arange(300)[:, None], 3, axis=1))


def test_a_bridge_whose_scheduler_is_gone_reads_runs_from_disk_at_once(tmp_path_factory) -> None:
    with module_local_job(tmp_path_factory, 1) as job:
        bridge = connect(job.scheduler_file, n_workers=1, timeout=60)
        try:
            bridge.gather(bridge.map(operator.neg, range(1000), name="outlives", progress=False),
                          progress=False, release=False)
            bridge.shutdown()
            assert not bridge.connected
            import time

            started = time.monotonic()
            assert bridge.results("outlives", progress=False) == [-x for x in range(1000)]
            with pytest.raises(ConnectionError, match=r"the cluster has ended \(shutdown\(\) ended it\)"):
                bridge.runs()
            assert time.monotonic() - started < 10  # no reconnect loop
        finally:
            bridge.close()



def test_a_run_gathered_from_disk_while_the_client_was_away_is_released_when_it_is_back(tmp_path_factory) -> None:
    """The client gave up on its scheduler (its node cut off longer than the client waits) and cannot
    attach again yet, while a named run finished: gather returns the run from disk, and the run the
    scheduler still holds is released as soon as the bridge is attached again, not left there for good."""
    with module_local_job(tmp_path_factory, 2) as job, connect(job.scheduler_file, n_workers=2, timeout=60) as bridge:
        run = bridge.map(square, range(5000), name="away", chunk_size=500, progress=False)
        assert bridge.gather(run, progress=False, release=False) == [x * x for x in range(5000)]
        bridge.client.close()  # what a client that gave up on its scheduler is left with
        hidden = Path(job.scheduler_file).rename(job.scheduler_file + ".away")  # no way back for now
        try:
            assert bridge.gather(run, progress=False) == [x * x for x in range(5000)]  # from disk
            assert not bridge.connected and not os.path.exists(run.directory)
        finally:
            hidden.rename(job.scheduler_file)
        assert "away" not in bridge.runs()  # attached again: the run is released there too
        assert bridge.connected


def test_gathering_again_after_the_client_gave_up_attaches_again_and_collects_from_the_cluster(tmp_path_factory) -> None:
    with module_local_job(tmp_path_factory, 2) as job, connect(job.scheduler_file, n_workers=2, timeout=60) as bridge:
        run = bridge.map(square, range(5000), name="again", chunk_size=500, progress=False)
        bridge.client.close()  # e.g. after SchedulerUnreachable, once the scheduler's node is back
        assert bridge.gather(run, progress=False) == [x * x for x in range(5000)]
        assert bridge.connected and "again" not in bridge.runs() and not os.path.exists(run.directory)


def list_of_blocks(x: int) -> list[np.ndarray]:
    return [np.full((200, 500), x, dtype=np.uint8)]


def test_a_saved_chunk_comes_back_as_the_pickle_on_disk_sent_as_its_own_frame(cluster) -> None:
    """The worker pickles a chunk once: the bytes it saved are what it returns, and they travel as
    an out-of-band buffer (no copy into distributed's message) before the client loads them."""
    _, bridge = cluster
    run = bridge.map(list_of_blocks, range(4), chunk_size=2, name="pickled-once", progress=False)
    raw = bridge.client.gather(run.futures)  # the chunks as the workers returned them
    folder = RunDirectory(run.directory)
    for (low, high), (values, errors, *_) in zip(run.bounds, raw):
        assert isinstance(values, chunks.Pickled) and not errors
        assert bytes(values.data) == folder.index().chunks[(low, high)][0].payload()
        buffers: list = []
        header = pickle.dumps(values, protocol=5, buffer_callback=buffers.append)
        assert len(buffers) == 1 and len(header) < 200  # the pickle went beside the message, not in it
        loaded, on_disk = values.values(), folder.load_chunk(low, high)
        assert len(loaded) == len(on_disk) == high - low
        assert all(np.array_equal(a[0], b[0]) for a, b in zip(loaded, on_disk))
    results = bridge.gather(run, progress=False)
    assert [int(block[0][0, 0]) for block in results] == [0, 1, 2, 3]
    assert all(block[0].shape == (200, 500) for block in results)


def test_a_map_of_many_chunks_writes_a_few_files_per_worker_process_not_one_per_chunk(cluster) -> None:
    """Shared filesystems (Lustre, GPFS) suffer from many small files: 400 chunks on 2 worker processes
    leave the manifest and one log per worker process in the run's folder."""
    _, bridge = cluster
    run = bridge.map(square, range(20_000), name="few-files", chunk_size=50, progress=False)
    assert bridge.gather(run, progress=False, release=False) == [x * x for x in range(20_000)]
    assert len(run.bounds) == 400
    names = RunDirectory(run.directory).files()
    assert len(names) <= 1 + bridge.n_workers, names
    assert "manifest.json" in names and 1 <= len(logs(run.directory)) <= bridge.n_workers, names
    assert RunDirectory(run.directory).saved() == run.bounds
    bridge.release("few-files")
    assert not os.path.exists(run.directory)


@pytest.mark.parametrize("cut", ["header", "values"])
def test_a_torn_last_record_is_computed_again_and_every_other_chunk_is_read_back_once(cluster, cut: str) -> None:
    """A worker process that died while writing leaves its log's last record torn: that chunk counts as
    not saved and a resume computes it again; every other chunk is read back, none twice."""
    _, bridge = cluster
    name = f"torn-{cut}"
    run = bridge.map(square, range(4000), name=name, chunk_size=100, progress=False)
    expected = [x * x for x in range(4000)]
    assert bridge.gather(run, progress=False, release=False) == expected
    assert executed(bridge, name) == 4000
    forget_on_cluster(bridge, name)
    log = max(logs(run.directory), key=lambda path: path.stat().st_size)
    last = list(chunk_log.read_records(str(log)))[-1]
    os.truncate(log, last.offset - chunk_log.HEADER // 2 if cut == "header" else last.offset + last.length // 2)
    torn = (last.low, last.high)
    bridge.client.restart()  # the process that wrote it is gone (only the process that writes a log changes it)
    assert torn not in RunDirectory(run.directory).saved()
    with pytest.raises(RunLost) as missing:  # results from disk: the torn chunk is missing, not garbage
        bridge.results(name, progress=False)
    assert missing.value.missing == [torn]

    before = executed(bridge, name)
    again = bridge.map(square, range(4000), name=name, progress=False)
    submitted = [bounds for bounds, future in zip(again.bounds, again.futures) if future is not None]
    assert missing_ranges(4000, [b for b in again.bounds if b not in submitted]) == [torn]  # only it is submitted
    assert bridge.gather(again, progress=False, release=False) == expected
    assert executed(bridge, name) - before == torn[1] - torn[0]  # the torn chunk only, once
    assert missing_ranges(4000, RunDirectory(run.directory).saved()) == []
    bridge.release(name)


def test_a_saved_chunk_whose_values_are_damaged_is_computed_again_on_resume(cluster) -> None:
    """A record whose header is whole but whose values are not (a node crash before the data reached
    the disk) is never read as values: its checksum fails, and a resume computes that chunk again."""
    _, bridge = cluster
    run = bridge.map(square, range(1000), name="damaged", chunk_size=100, progress=False)
    bridge.gather(run, progress=False, release=False)
    forget_on_cluster(bridge, "damaged")
    log = logs(run.directory)[0]
    record = list(chunk_log.read_records(str(log)))[0]
    with open(log, "r+b") as file:
        file.seek(record.offset)
        file.write(bytes(record.length))  # zeros, as a crashed node can leave
    with pytest.raises(ValueError, match="damaged"):
        RunDirectory(run.directory).load_chunk(record.low, record.high)
    before = executed(bridge, "damaged")
    again = bridge.map(square, range(1000), name="damaged", progress=False)
    assert bridge.gather(again, progress=False) == [x * x for x in range(1000)]
    assert executed(bridge, "damaged") - before == record.high - record.low


def test_chunks_held_by_a_worker_that_died_are_read_back_from_its_log_not_computed_again(cluster) -> None:
    """A worker killed after it finished (and saved) chunks takes their results out of the cluster's
    memory: distributed runs those tasks again elsewhere, and they read the dead worker's log."""
    _, bridge = cluster
    run = bridge.map(square, range(4000), name="held", chunk_size=100, progress=False)
    assert wait_for(lambda: all(future.status == "finished" for future in run.futures), 60, 0.05)
    holders = bridge.client.who_has(run.futures)
    victim = next(iter(holders[run.futures[0].key]))
    held = sum(high - low for (low, high), future in zip(run.bounds, run.futures) if victim in holders[future.key])
    survivor = sum(counts.get("held", 0) for address, counts in bridge.client.run(chunks.executed_items).items()
                   if address != victim)
    pid = bridge.client.run(os.getpid, workers=[victim])[victim]
    os.kill(pid, signal.SIGKILL)
    assert held > 0 and wait_for(lambda: victim not in bridge.client.scheduler_info()["workers"], 60, 0.1)
    assert bridge.gather(run, progress=False) == [x * x for x in range(4000)]
    assert executed(bridge, "held") == survivor  # nothing of the dead worker's chunks ran again
    bridge.client.wait_for_workers(2, timeout=60)
