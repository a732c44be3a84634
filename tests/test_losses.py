"""Which error a lost run raises, from what the batch system says (hpcbridge/losses.py)."""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cloudpickle
import pytest

from hpcbridge.addresses import address_silent
from hpcbridge.client.bridge import connect
from hpcbridge.cluster import chunks
from hpcbridge.job import submit as jobs
from hpcbridge.backends import JobStatus
from hpcbridge.client.losses import (
    JobCancelled,
    NodeFailed,
    RunLost,
    SchedulerLost,
    SchedulerUnreachable,
    WalltimeReached,
    WorkersLeft,
    explain,
)
from tests.conftest import job_processes, wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # pause runs on the cluster


@dataclass
class EndedJob:
    """A job whose state is already known (explain only reads ``job_id`` and ``status()``)."""

    state: str
    reason: str | None = None
    job_id: str = "4242"

    def status(self) -> JobStatus:
        return JobStatus(self.job_id, self.state, self.reason)


@pytest.mark.parametrize(("job", "lost", "gone", "cause", "words"), [
    (EndedJob("TIMEOUT"), True, False, WalltimeReached, "job 4242 reached its walltime (the batch system says: TIMEOUT)"),
    (EndedJob("CANCELLED", "cancelled by root"), True, False, JobCancelled,
     "job 4242 was cancelled (the batch system says: CANCELLED, cancelled by root)"),
    (EndedJob("FAILED", "NodeFail: node3 failed"), True, False, NodeFailed, "a node of job 4242 failed"),
    (EndedJob("RUNNING"), True, False, SchedulerLost, "reconnecting was tried for 10 s; job 4242 is RUNNING"),
    (EndedJob("RUNNING"), False, True, WorkersLeft, "every worker left the cluster while its scheduler still ran"),
    (EndedJob("FAILED"), True, True, WorkersLeft, "every worker exited, and then job 4242 stopped its scheduler"),
    (None, True, False, SchedulerLost, "the batch job is not known to this client"),
])
def test_each_cause_has_its_own_error_in_the_batch_systems_words(job, lost, gone, cause, words) -> None:
    found, what = explain(job, lost, gone, [], 10.0, "tcp://10.77.0.1:40000")
    assert found is cause and words in what


def test_workers_that_left_for_the_walltime_name_it_even_when_the_job_completed() -> None:
    drained = [{"worker": "tcp://10.77.0.2:1", "margin": 31.0}]
    assert explain(EndedJob("COMPLETED"), True, True, drained, 10.0, "a")[0] is WalltimeReached
    assert explain(EndedJob("COMPLETED"), True, True, [], 10.0, "a", near_end=True)[0] is WalltimeReached
    assert explain(EndedJob("COMPLETED"), True, True, [], 10.0, "a")[0] is not WalltimeReached


def test_the_error_carries_progress_results_and_what_to_do_next() -> None:
    error = WalltimeReached("scores", "job 4242 reached its walltime", 10, 6, 6, [(6, 10)],
                            [0, 1, 2, 3, 4, 5, None, None, None, None], "/scratch/runs/scores", "4242")
    assert isinstance(error, RunLost) and error.n_missing == 4 and error.missing_items() == [6, 7, 8, 9]
    assert str(error) == (
        "run 'scores': job 4242 reached its walltime. 6 of 10 items were computed, 6 saved in "
        "/scratch/runs/scores; 4 have no result (items 6..9). The results saved in /scratch/runs/scores are "
        "kept: results('scores') returns them, and map(fn, items, name='scores') on a new cluster computes "
        "only the missing items.")


def test_a_scheduler_out_of_reach_while_its_job_runs_says_the_run_is_probably_still_there() -> None:
    found, what = explain(EndedJob("RUNNING"), True, False, [], 26.0, "tls://10.77.0.1:40000", silent=True)
    assert found is SchedulerUnreachable and issubclass(found, SchedulerLost)
    assert what == ("the scheduler at tls://10.77.0.1:40000 cannot be reached while job 4242 is still RUNNING "
                    "(its node is cut off the network or hangs): it did not answer for 26 s, and connections to "
                    "it time out")
    error = found("scores", what, 10, 6, 6, [(6, 10)], None, "/scratch/runs/scores", "4242")
    assert "The run is probably still on the scheduler, since job 4242 still runs: once the scheduler answers " \
           "again (the network to its node is back, its process runs again), results('scores') on this bridge or " \
           "on connect(job=...) " \
           "collects every result from it." in str(error)
    # A silent address whose job has ended is the job's end, not a cut.
    assert explain(EndedJob("CANCELLED"), True, False, [], 26.0, "a:1", silent=True)[0] is JobCancelled


def test_a_refused_or_answering_address_is_not_silent() -> None:
    """(A silent one, a node cut off, is made for real in tests/cluster/test_node_cuts.py.)"""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    assert not address_silent(f"tcp://127.0.0.1:{port}", timeout=1.0)  # nothing listens: refused
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not address_silent(f"tls://127.0.0.1:{listener.getsockname()[1]}", timeout=1.0)


def test_a_scheduler_that_hangs_is_told_from_one_that_died() -> None:
    """Its port accepts connections (the kernel does) but it does not answer: it hangs, its job runs, the run
    is most likely still on it. A refused port is a scheduler process that is gone."""
    found, what = explain(EndedJob("RUNNING"), True, False, [], 31.0, "tls://10.77.0.1:40000", hanging=True)
    assert found is SchedulerUnreachable
    assert "accepts connections but has not answered for 31 s" in what and "hangs" in what
    assert "a scheduler that died refuses connections" in what
    found, what = explain(EndedJob("RUNNING"), True, False, [], 10.0, "tls://10.77.0.1:40000", refused=True)
    assert found is SchedulerLost and "refuses connections: the scheduler process is gone" in what


def scheduler_pid(job_id: str) -> int:
    (pid,) = [pid for pid in job_processes(job_id)
              if b"distributed.cli.dask_scheduler" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return pid


def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_stopped_scheduler_is_named_as_hanging_within_the_bound_and_keeps_the_run(local_jobs, local_spec) -> None:
    """SIGSTOP on the scheduler (as a node swapping hard, or a debugger): the error says it hangs rather than
    died, and once it runs again the run is collected from it, no item computed twice."""
    job = jobs.submit(local_spec(ntasks_per_node=2, cpus_per_task=1))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=60, job=job) as bridge:
        run = bridge.map(pause, [0.05] * 400, name="frozen", chunk_size=10, progress=False)
        assert wait_for(lambda: run.done_items() >= 40, timeout=60)
        pid = scheduler_pid(job.job_id)
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            with pytest.raises(SchedulerUnreachable, match="accepts connections but has not answered") as lost:
                bridge.gather(run, progress=False, timeout=150)
            print(f"\nfigures stopped scheduler: error after {time.monotonic() - stopped_at:.1f} s: {lost.value}")
            assert time.monotonic() - stopped_at < 120
        finally:
            os.kill(pid, signal.SIGCONT)
        assert lost.value.done < 400
        assert bridge.results("frozen", progress=False, timeout=120) == [0.05] * 400
        executed = sum(counts.get("frozen", 0) for counts in bridge.client.run(chunks.executed_items).values())
        assert executed == 400
