"""How a job ended, in each batch system's words, from the output formats the systems document.

Slurm and PBS are also run for real (tests/cluster/); here their parsers meet the lines seen
there, and LSF (which does not run here) meets its documented ``bjobs -o`` output through an
emulated ``bjobs`` on PATH, as do Slurm's ``sacct`` lines where accounting runs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hpcbridge.backends import pbs, slurm
from hpcbridge.backends.lsf import LSFBackend
from hpcbridge.backends.slurm import SlurmBackend


def fake_command(folder: Path, name: str, output: str, exit_code: int = 0, stream: str = "") -> None:
    """An executable ``name`` in ``folder`` that prints ``output`` (to stderr with ``stream=">&2"``)."""
    script = folder / name
    script.write_text(f"#!/bin/sh\ncat {stream} <<'EOF'\n{output}\nEOF\nexit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


@pytest.mark.parametrize(("line", "state", "words"), [
    ("EXIT|140|/home/ada/j.out|TERM_RUNLIMIT: job killed after reaching LSF run time limit|-", "TIMEOUT",
     "TERM_RUNLIMIT: the job reached its run time limit (walltime)"),
    ("EXIT|130|/home/ada/j.out|TERM_OWNER: job killed by owner|-", "CANCELLED", "TERM_OWNER: killed by its owner"),
    ("EXIT|130|/home/ada/j.out|TERM_ADMIN|-", "CANCELLED", "TERM_ADMIN: killed by root or an LSF administrator"),
    ("PEND|-|/home/ada/j.out|TERM_REQUEUE_ADMIN|Job was requeued", "PENDING",
     "TERM_REQUEUE_ADMIN: killed and requeued by root or an LSF administrator; Job was requeued"),
    ("UNKWN|-|/home/ada/j.out|-|-", "UNKNOWN", "LSF has lost contact with the job's host (UNKWN)"),
    ("PEND|-|/home/ada/j.out|-|Job's resource requirements not satisfied", "PENDING",
     "Job's resource requirements not satisfied"),
])
def test_emulated_lsf_says_how_a_job_ended(fake_bin, line, state, words) -> None:
    fake_command(fake_bin, "bjobs", line)
    status = LSFBackend().status("51234")
    assert (status.state, status.log) == (state, "/home/ada/j.out")
    assert status.reason.startswith(words), status.reason


@pytest.mark.parametrize(("text", "state", "words"), [
    ("slurmstepd-node1: error: *** JOB 3 ON node1 CANCELLED AT 2026-12-02T00:58:34 DUE TO TIME LIMIT ***",
     "TIMEOUT", "JOB 3 ON node1 CANCELLED AT 2026-12-02T00:58:34 DUE TO TIME LIMIT"),
    ("slurmstepd-node1: error: *** JOB 2 ON node1 CANCELLED AT 2026-12-02T00:55:58 DUE TO NODE FAILURE, SEE "
     "SLURMCTLD LOG FOR DETAILS ***", "FAILED", "JOB 2 ON node1 CANCELLED AT 2026-12-02T00:55:58 DUE TO NODE FAILURE"),
    ("slurmstepd-node1: error: *** JOB 4 ON node1 CANCELLED AT 2026-12-02T00:57:12 ***", "CANCELLED",
     "JOB 4 ON node1 CANCELLED AT 2026-12-02T00:57:12"),
    ("=>> PBS: job killed: walltime 65 exceeded limit 60", "TIMEOUT", "PBS: job killed: walltime 65 exceeded limit 60"),
])
def test_pbs_reads_why_the_batch_system_ended_a_job_from_its_output(tmp_path, text, state, words) -> None:
    log = tmp_path / "pbs.out"
    log.write_text(f"hpcbridge: scheduler file ready\n{text}\nsrun: error: node1: task 0: Terminated\n")
    assert pbs._last_end_line(log) == (words, state)


def test_slurm_says_requeued_after_a_node_failure_not_cancelled_or_begintime(tmp_path) -> None:
    log = tmp_path / "job-2.out"
    log.write_text("srun: error: Node failure on node2\nslurmstepd-node1: error: *** JOB 2 ON node1 CANCELLED AT "
                   "2026-12-02T00:55:58 DUE TO NODE FAILURE, SEE SLURMCTLD LOG FOR DETAILS ***\n")
    record = {"JobState": "PENDING", "Reason": "BeginTime", "Restarts": "1", "EligibleTime": "2026-12-02T00:57:59",
              "StdOut": str(log)}
    reason = slurm.describe(record, "PENDING", 1, slurm._last_end_line(record, "2"))
    assert reason.startswith("node failure: Slurm ended the job (JOB 2 ON node1 CANCELLED AT 2026-12-02T00:55:58 "
                             "DUE TO NODE FAILURE) and requeued it (Restarts=1); pending again")
    # A cancelled job's leftover pending reason says nothing about how it ended.
    assert slurm.describe({"Reason": "BeginTime"}, "CANCELLED", 0, None) is None


def test_slurm_tells_a_requeued_job_cancelled_while_running_from_one_cancelled_while_pending(tmp_path) -> None:
    """Records and output as Slurm 22.05 left them on the harness: a job requeued, started again
    (Slurm truncates its output then) and cancelled while running; one cancelled while still pending."""
    running = tmp_path / "job-2.out"
    running.write_text("start restarts=1\nslurmstepd-node1: error: *** JOB 2 ON node1 CANCELLED AT "
                       "2026-12-06T15:15:06 ***\n")
    record = {"JobState": "CANCELLED", "Reason": "None", "Restarts": "1", "ExitCode": "0:15", "RunTime": "00:00:02",
              "StdOut": str(running)}
    reason = slurm.describe(record, "CANCELLED", 1, slurm._last_end_line(record, "2"))
    assert "cancelled while running, after 1 restart" in reason, reason
    assert "pending" not in reason and "requeued it" not in reason, reason  # the cancel requeued nothing
    assert "JOB 2 ON node1 CANCELLED AT 2026-12-06T15:15:06" in reason
    pending = tmp_path / "job-3.out"
    pending.write_text("start restarts=\nslurmstepd-node1: error: *** JOB 3 ON node1 CANCELLED AT 2026-12-06T15:15:15 "
                       "DUE TO NODE FAILURE, SEE SLURMCTLD LOG FOR DETAILS ***\n")
    record = {"JobState": "CANCELLED", "Reason": "BeginTime", "Restarts": "2", "ExitCode": "0:0",
              "RunTime": "00:00:00", "StdOut": str(pending)}
    reason = slurm.describe(record, "CANCELLED", 2, slurm._last_end_line(record, "3"))
    assert reason.startswith("node failure: Slurm ended the job (JOB 3 ON node1 CANCELLED AT 2026-12-06T15:15:15 DUE "
                             "TO NODE FAILURE) and requeued it (Restarts=2)"), reason
    assert reason.endswith("then cancelled while pending, after 2 restarts"), reason
    # Requeued, started again and ended by its walltime: the end line is the last start's end, not the requeue's.
    timed_out = tmp_path / "job-4.out"
    timed_out.write_text("slurmstepd-node1: error: *** JOB 4 ON node1 CANCELLED AT 2026-12-06T16:00:00 DUE TO TIME "
                         "LIMIT ***\n")
    record = {"JobState": "TIMEOUT", "Reason": "TimeLimit", "Restarts": "1", "RunTime": "00:10:00",
              "StdOut": str(timed_out)}
    reason = slurm.describe(record, "TIMEOUT", 1, slurm._last_end_line(record, "4"))
    assert reason.startswith("requeued by Slurm (Restarts=1); Slurm: JOB 4 ON node1 CANCELLED AT 2026-12-06T16:00:00 "
                             "DUE TO TIME LIMIT"), reason


def test_slurm_asks_sacct_who_cancelled_a_job_and_about_jobs_scontrol_forgot(fake_bin, monkeypatch) -> None:
    monkeypatch.setattr(slurm, "_SACCT_MISSING", [])
    fake_command(fake_bin, "scontrol", "slurm_load_jobs error: Invalid job id specified", exit_code=1, stream=">&2")
    fake_command(fake_bin, "sacct", "CANCELLED by 0|0:15|/home/ada/slurm-7.out")
    status = SlurmBackend().status("7")
    assert (status.state, status.exit_code, status.log) == ("CANCELLED", 0, "/home/ada/slurm-7.out")
    assert status.reason == "cancelled by root (uid 0) (sacct: CANCELLED by 0)"
    fake_command(fake_bin, "sacct", "NODE_FAIL|1:0|/home/ada/slurm-8.out")
    assert SlurmBackend().status("8").state == "FAILED"
    assert SlurmBackend().status("8").reason == "NODE_FAIL: a node of the job failed"
