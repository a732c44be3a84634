"""Slurm: ``sbatch``, ``scontrol show job``, ``scancel``.

Status comes from ``scontrol`` rather than ``sacct`` because many clusters (and the test harness)
run without accounting; Slurm forgets a finished job after ``MinJobAge`` (300 s by default), and
then the state is UNKNOWN unless ``sacct`` can still tell.
"""

from __future__ import annotations

import re
from pathlib import Path

from hpcbridge.backends.base import BatchCommandError, JobNotFound, JobStatus, run_command

_JOB_ID = re.compile(r"^(\d+(?:_\d+)?)(?:;\S+)?$")
_FIELD = re.compile(r"(\w+)=(\S*)")

# Slurm's pending reasons, in words a user can act on.
PENDING_REASONS = {
    "Priority": "other jobs have higher priority",
    "Resources": "waiting for nodes to become free",
    "Dependency": "waiting for a job it depends on",
    "DependencyNeverSatisfied": "a job it depends on failed; it will never start",
    "BeginTime": "its start time has not come yet",
    "JobHeldUser": "held by you (scontrol release releases it)",
    "JobHeldAdmin": "held by an administrator",
    "ReqNodeNotAvail": "a requested node is down, drained or reserved",
    "PartitionTimeLimit": "the walltime exceeds the partition's limit",
    "PartitionNodeLimit": "more nodes than the partition allows",
    "PartitionDown": "the partition is down",
    "QOSMaxJobsPerUserLimit": "you have reached your limit of running jobs",
    "AssocGrpCpuLimit": "your account has reached its CPU limit",
    "AssocMaxJobsLimit": "your account has reached its job limit",
    "Reservation": "waiting for its reservation to start",
    "NodeDown": "a node it needs is down",
    "BadConstraints": "the request can never be satisfied by this cluster's nodes",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
}

_STATES = {
    "PENDING": "PENDING",
    "CONFIGURING": "PENDING",
    "RUNNING": "RUNNING",
    "COMPLETING": "COMPLETING",
    "COMPLETED": "COMPLETED",
    "CANCELLED": "CANCELLED",
    "TIMEOUT": "TIMEOUT",
    "FAILED": "FAILED",
    "NODE_FAIL": "FAILED",
    "OUT_OF_MEMORY": "FAILED",
    "BOOT_FAIL": "FAILED",
    "DEADLINE": "TIMEOUT",
    "PREEMPTED": "CANCELLED",
    "SUSPENDED": "PENDING",
}


def parse_job_id(sbatch_output: str) -> str:
    """Return the job id from ``sbatch --parsable`` output (``123`` or ``123;cluster``).

    >>> parse_job_id("4242\\n"), parse_job_id("17;cluster2")
    ('4242', '17')
    """
    match = _JOB_ID.match(sbatch_output.strip())
    if not match:
        raise ValueError(f"sbatch printed no job id: {sbatch_output.strip()!r}")
    return match.group(1)


def parse_scontrol_job(text: str) -> dict[str, str]:
    """Return the ``Key=Value`` pairs of ``scontrol show job -o`` output.

    >>> parse_scontrol_job("JobId=5 JobState=PENDING Reason=Resources ExitCode=0:0")["Reason"]
    'Resources'
    """
    return dict(_FIELD.findall(text))


def combine_states(states: list[str]) -> str:
    """One state for the elements of a job array: running while any runs, else how they ended.

    >>> combine_states(["COMPLETED", "RUNNING", "PENDING"]), combine_states(["COMPLETED", "FAILED"])
    ('RUNNING', 'FAILED')
    """
    for state in ("RUNNING", "COMPLETING", "PENDING", "UNKNOWN", "FAILED", "TIMEOUT", "CANCELLED"):
        if state in states:
            return state
    return "COMPLETED"


def explain_reason(reason: str | None) -> str | None:
    """Turn Slurm's reason code into words; unknown codes pass through as they are."""
    if not reason or reason == "None":
        return None
    return f"{reason}: {PENDING_REASONS[reason]}" if reason in PENDING_REASONS else reason


class SlurmBackend:
    """Submit, query and cancel Slurm jobs with Slurm's own commands."""

    name = "slurm"

    def submit(self, script: str) -> str:
        return parse_job_id(run_command(["sbatch", "--parsable"], stdin=script))

    def status(self, job_id: str) -> JobStatus:
        """The job's state; for a job array, one state for all its elements (see :func:`combine_states`)."""
        records = self._show_all(job_id)
        states = [_STATES.get(record.get("JobState", ""), "UNKNOWN") for record in records]
        state = combine_states(states)
        exit_codes = [int(r["ExitCode"].split(":")[0]) for r, s in zip(records, states)
                      if "ExitCode" in r and s not in ("PENDING", "RUNNING")]
        reasons = [explain_reason(r.get("Reason")) for r in records]
        return JobStatus(
            job_id=job_id,
            state=state,
            reason=next((reason for reason in reasons if reason), None),
            exit_code=max(exit_codes) if exit_codes and state not in ("PENDING", "RUNNING") else None,
            log=records[0].get("StdOut"),
        )

    def cancel(self, job_id: str) -> None:
        self._show(job_id)
        run_command(["scancel", job_id])

    def log_path(self, job_id: str) -> Path | None:
        log = self._show(job_id).get("StdOut")
        return Path(log) if log else None

    def _show(self, job_id: str) -> dict[str, str]:
        return self._show_all(job_id)[0]

    @staticmethod
    def _show_all(job_id: str) -> list[dict[str, str]]:
        """One record per job, or per element of a job array."""
        try:
            output = run_command(["scontrol", "show", "job", "-o", job_id])
            return [parse_scontrol_job(line) for line in output.splitlines() if line.strip()]
        except BatchCommandError as error:
            if "Invalid job id" in error.stderr:
                raise JobNotFound(
                    f"Slurm does not know job {job_id} (a finished job is forgotten after MinJobAge)"
                ) from None
            raise
