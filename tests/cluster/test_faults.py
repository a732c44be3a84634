"""No computed result is lost, on the real Slurm of the harness (three namespace nodes).

Each fault happens to a real job while a map runs: the walltime, a cancelled job, a killed
scheduler, a SIGKILLed worker and a cancelled worker step. Every item counts its executions with a
file of its own (``marked``), so "computed once" is counted, not assumed. Bounds: every wait in
here has a deadline; the errors name their cause within ``LOSS_BOUND`` seconds of the fault
(reconnecting is tried 10 s, the batch system is given 10 s to report the job's end, and a
cluster without workers is reported after 20 s).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cloudpickle
import pytest

from hpcbridge.client.bridge import Bridge, connect
from hpcbridge.client.losses import JobCancelled, SchedulerLost, WalltimeReached
from hpcbridge.cluster import chunks
from hpcbridge.job.spec import SpecWarning
from tests.conftest import wait_for, worker_tls_env

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below run on the cluster

LOSS_BOUND = 45.0


def marked(item: int, marks: str, seconds: float) -> int:
    """Leave a file per execution, take ``seconds``, return ``3 * item``."""
    Path(marks, f"{item}-{uuid.uuid4().hex[:8]}").touch()
    time.sleep(seconds)
    return 3 * item


async def die() -> None:
    """Run on a worker (a coroutine, so that ``client.run(..., wait=False)`` takes it): SIGKILL it."""
    os.kill(os.getpid(), signal.SIGKILL)


def executions(marks: Path) -> collections.Counter:
    return collections.Counter(int(path.name.split("-")[0]) for path in marks.iterdir())


def executed(bridge: Bridge, run: str) -> int:
    return sum(counts.get(run, 0) for counts in bridge.client.run(chunks.executed_items).values())


# The walltime tests use Slurm's shortest walltime (a minute: its limits are whole minutes) and the
# smallest margin a spec accepts (30 s; hpcbridge.cluster.drain never uses less). A worker stops
# taking chunks at end - max(30, 3 x its longest chunk) - stagger, the stagger at least 1 s; chunks
# of these 0.5 s items hold one item each (over TARGET_CHUNK_SECONDS), so a worker (one thread)
# works at most 60 - 30 - 1 = 29 s after the job starts, and a chunk it starts just before that
# may end 0.5 s later: at most 29.5 worker-seconds (59 items) per worker. Maps longer than
# n_workers x WORK_BOUND certainly have items left at the walltime, whatever the stagger, however
# fast the workers start; the stagger's upper end (10 s) and workers ready ~7 s after the start
# still leave each worker ~13 s (about 26 items; ~31 seen), so some are done and the rest to resume
# stays short.
WORK_BOUND = 29.5


def walltime_reached(job, n_workers: int, items: list[int], marks: Path, name: str) -> WalltimeReached:
    """Map ``items`` (0.5 s each) on ``job`` until its walltime; check what the error says and keeps."""
    assert len(items) * 0.5 > n_workers * WORK_BOUND, "the map must outlast what the workers can do"
    with connect(job=job, n_workers=n_workers, timeout=120) as bridge:
        run = bridge.map(marked, items, args=(str(marks), 0.5), name=name, progress=False)
        with pytest.raises(WalltimeReached) as reached:
            bridge.gather(run, progress=False, timeout=200)
    error = reached.value
    print(f"\nfigures walltime ({job.job_id}): {error}")
    assert "reached its walltime" in str(error) and error.missing and error.done + error.n_missing == len(items)
    assert error.done > 0 and error.saved == error.done  # every computed chunk is on disk
    assert all(error.results[i] == 3 * i for i in items if i not in set(error.missing_items()))
    assert max(executions(marks).values()) == 1, "an item ran twice in the job"
    return error


def test_the_walltime_loses_nothing_and_a_new_job_resumes_only_the_rest(submit_3nodes, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    items = list(range(200))  # 100 worker-seconds; 3 workers do at most 88.5 before they leave (WORK_BOUND)
    with pytest.warns(SpecWarning, match="lifetime_margin"):  # a minute's walltime is short on purpose
        first = submit_3nodes(walltime="1m", lifetime_margin=30, job_name="walltime")
    error = walltime_reached(first, 3, items, marks, "long")
    assert wait_for(lambda: first.status().finished, timeout=60)  # it ends once every worker has left

    second = submit_3nodes(job_name="resume")
    with connect(second.scheduler_file, n_workers=3, timeout=120, job=second) as bridge:
        run = bridge.map(marked, items, args=(str(marks), 0.5), name="long", progress=False)
        assert bridge.gather(run, progress=False, timeout=120) == [3 * i for i in items]
        assert executed(bridge, "long") == error.n_missing  # only what had no result
        bridge.shutdown()
    assert executions(marks) == collections.Counter(items)  # each item computed exactly once


def test_in_mpi_mode_the_workers_drain_before_the_walltime_and_every_result_is_saved(submit_3nodes,
                                                                                    tmp_path: Path) -> None:
    """dask-mpi mode (rank 0 the scheduler, ranks 1-2 workers) with a 1-minute walltime: the workers
    leave in time, every chunk they finished is on disk, none ran twice, the error names the walltime,
    and the job ends by itself once they are gone (COMPLETED, saying why), not at the walltime."""
    marks = tmp_path / "marks"
    marks.mkdir()
    items = list(range(150))  # 75 worker-seconds; 2 workers do at most 59 before they leave (WORK_BOUND)
    with pytest.warns(SpecWarning, match="lifetime_margin"):  # a minute's walltime is short on purpose
        job = submit_3nodes(mode="mpi", walltime="1m", lifetime_margin=30, job_name="mpiwall")
    error = walltime_reached(job, 2, items, marks, "mpilong")
    assert "2 worker(s) left before it" in str(error)
    log = Path(job.status().log)
    # Both workers left for it (their lines reach the log through srun: a bounded wait).
    assert wait_for(lambda: log.read_text().count("hpcbridge-drain-before-walltime") >= 2, timeout=30), \
        log.read_text()[-3000:]
    # With no worker left the scheduler (rank 0) ends the job itself, long before the walltime: the
    # allocation is not held idle until Slurm kills it (it ended TIMEOUT ~28 s past its end before).
    assert wait_for(lambda: job.status().finished, timeout=30), job.status()
    ended = job.status()
    assert ended.state == "COMPLETED", ended
    assert "hpcbridge: ended after every worker left before the walltime" in log.read_text(), log.read_text()[-3000:]


def test_a_cancelled_job_is_named_and_a_new_job_computes_only_the_rest(submit_3nodes, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    items = list(range(300))
    first = submit_3nodes(job_name="cancelled")
    with connect(first.scheduler_file, n_workers=3, timeout=120, job=first) as bridge:
        run = bridge.map(marked, items, args=(str(marks), 0.2), name="cut", progress=False)
        assert wait_for(lambda: run.done_items() >= 60, timeout=120)
        first.cancel()
        cancelled_at = time.monotonic()
        with pytest.raises(JobCancelled, match=rf"job {first.job_id} was cancelled \(the batch system says: CANCELLED"):
            bridge.gather(run, progress=False, timeout=120)
        print(f"\nfigures cancel: error after {time.monotonic() - cancelled_at:.1f} s")
        assert time.monotonic() - cancelled_at < LOSS_BOUND
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            bridge.runs()  # at once, not after distributed's 30 s reconnect loop
        assert time.monotonic() - started < 5
        with pytest.raises(JobCancelled) as from_disk:  # the same bridge reads the run directory
            bridge.results("cut", progress=False)
        missing = from_disk.value.n_missing
        assert from_disk.value.done == from_disk.value.saved == 300 - missing
    assert 0 < missing < 300

    second = submit_3nodes(job_name="resume2")
    with connect(second.scheduler_file, n_workers=3, timeout=120, job=second) as bridge:
        assert bridge.gather(bridge.map(marked, items, args=(str(marks), 0.2), name="cut", progress=False),
                             progress=False, timeout=120) == [3 * i for i in items]
        assert executed(bridge, "cut") == missing
        bridge.shutdown()


def scheduler_pids(scheduler_file: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # The scheduler writes its own file beside the one the job publishes (scheduler.json.dask).
        if b"distributed.cli.dask_scheduler" in words and (
                scheduler_file.encode() in words or f"{scheduler_file}.dask".encode() in words):
            found.append(int(entry.name))
    return found


def test_a_killed_scheduler_is_named_within_the_bound_and_what_was_saved_is_kept(submit_3nodes,
                                                                                 tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    job = submit_3nodes(job_name="nosched")
    with connect(job.scheduler_file, n_workers=3, timeout=120, job=job) as bridge:
        run = bridge.map(marked, range(300), args=(str(marks), 0.2), name="orphan", progress=False)
        assert wait_for(lambda: run.done_items() >= 60, timeout=120)
        (pid,) = scheduler_pids(job.scheduler_file)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        with pytest.raises(SchedulerLost, match=r"the scheduler at \S+ stopped answering; reconnecting was tried") \
                as lost:
            bridge.gather(run, progress=False, timeout=120)
        print(f"\nfigures scheduler: error after {time.monotonic() - killed_at:.1f} s: {lost.value}")
        assert time.monotonic() - killed_at < LOSS_BOUND
        assert lost.value.saved >= 60 and lost.value.done == lost.value.saved
        with pytest.raises(SchedulerLost) as again:  # from disk, at once
            bridge.results("orphan", progress=False)
        assert again.value.done == lost.value.done
        assert all(again.value.results[i] == 3 * i for i in range(300) if i not in set(again.value.missing_items()))


def test_a_sigkilled_worker_and_a_cancelled_worker_step_lose_nothing(submit_3nodes, slurm_cluster_3nodes,
                                                                     tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    job = submit_3nodes(job_name="workerfaults")
    with connect(job.scheduler_file, n_workers=3, timeout=120, job=job) as bridge:
        late = subprocess.Popen(
            ["srun", f"--jobid={job.job_id}", "--overlap", "--ntasks=1", "--cpus-per-task=1", sys.executable,
             "-m", "distributed.cli.dask_worker", "--scheduler-file", job.scheduler_file, "--nthreads", "1",
             "--interface", slurm_cluster_3nodes.interface, "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **worker_tls_env(job.scheduler_file)})
        try:
            assert wait_for(lambda: bridge.n_workers == 4, timeout=60), "the extra worker step did not join"
            run = bridge.map(marked, range(400), args=(str(marks), 0.1), name="faults", progress=False)
            assert wait_for(lambda: run.done_items() >= 40, timeout=120)
            victim = sorted(bridge.client.scheduler_info(n_workers=-1)["workers"])[0]
            bridge.client.run(die, workers=[victim], wait=False)
            assert wait_for(lambda: run.done_items() >= 150, timeout=120)
            steps = slurm_cluster_3nodes.run("squeue", "-h", "-s", "-j", job.job_id, "-o", "%i").stdout.split()
            newest = max(steps, key=lambda step: int(step.split(".")[1]) if step.split(".")[1].isdigit() else -1)
            assert slurm_cluster_3nodes.run("scancel", newest).returncode == 0
            assert bridge.gather(run, progress=False, timeout=120) == [3 * i for i in range(400)]
        finally:
            if late.poll() is None:
                late.terminate()
            late.wait(timeout=30)
        bridge.shutdown()
