"""Slurm: ``sbatch``, ``scontrol show job``, ``scancel`` (and ``sacct`` where accounting runs).

Status comes from ``scontrol`` rather than ``sacct`` because many clusters (and the test harness)
run without accounting; Slurm forgets a finished job after ``MinJobAge`` (300 s by default), and
then only ``sacct`` can still tell. What happened to a job is said in Slurm's own words: its
state and reason codes, ``Restarts`` for a requeued job, who cancelled it (``sacct``), and the
line Slurm writes into the job's output when it ends a job (``*** JOB 2 ON node1 CANCELLED AT
... DUE TO NODE FAILURE ***``), which is the only trace of a node failure without accounting.
"""

from __future__ import annotations

import pwd
import re
from collections.abc import Sequence
from pathlib import Path

from hpcbridge.backends.base import BatchCommandError, JobNotFound, JobStatus, read_tail, run_command

_JOB_ID = re.compile(r"^(\d+(?:_\d+)?)(?:;\S+)?$")
_FIELD = re.compile(r"(\w+)=(\S*)")
_ENDED = re.compile(r"\*\*\* JOB (?P<job>\d+) ON (?P<host>\S+) CANCELLED AT (?P<time>\S+)"
                    r"(?: DUE TO (?P<cause>[A-Z ]+?))?(?:, SEE [^*]*)? \*\*\*")
_CANCELLED_BY = re.compile(r"CANCELLED by (\d+)")
# What a job ended by looks like in the batch system's words (sacct states and scontrol reasons).
END_STATES = {
    "TIMEOUT": "the job reached its walltime",
    "NODE_FAIL": "a node of the job failed",
    "CANCELLED": "the job was cancelled",
    "PREEMPTED": "the job was preempted",
    "OUT_OF_MEMORY": "the job ran out of memory",
    "BOOT_FAIL": "a node failed to boot",
    "DEADLINE": "the job reached its deadline",
}

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
    "TimeLimit": "the job reached its walltime",
    "NodeFail": "a node of the job failed",
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
        """The job's state; for a job array, one state for all its elements (see :func:`combine_states`).

        A job Slurm has forgotten (``MinJobAge``) is looked up in ``sacct`` when accounting runs.
        """
        try:
            records = self._show_all(job_id)
        except JobNotFound:
            accounted = _sacct(job_id)
            if accounted is None:
                raise
            return accounted
        states = [_STATES.get(record.get("JobState", ""), "UNKNOWN") for record in records]
        state = combine_states(states)
        exit_codes = [int(r["ExitCode"].split(":")[0]) for r, s in zip(records, states)
                      if "ExitCode" in r and s not in ("PENDING", "RUNNING")]
        restarts = max((int(r["Restarts"]) for r in records if r.get("Restarts", "").isdigit()), default=0)
        first = records[0]
        return JobStatus(
            job_id=job_id,
            state=state,
            reason=describe(first, state, restarts, _last_end_line(first, job_id),
                            _sacct(job_id) if state in ("CANCELLED", "FAILED") else None),
            exit_code=max(exit_codes) if exit_codes and state not in ("PENDING", "RUNNING") else None,
            log=first.get("StdOut"),
            restarts=restarts,
        )

    def queued(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The jobs among ``job_ids`` that wait or run, from one ``squeue`` (see :func:`~hpcbridge.backends.base.statuses`).

        A job in an end state is left out: :meth:`status` says how it ended (squeue cannot).
        """
        output = run_command(["squeue", "--noheader", "--jobs", ",".join(job_ids), "--format", "%i|%T|%r"],
                             timeout=30)
        found = {}
        for line in output.splitlines():
            job_id, _, rest = line.strip().partition("|")
            state_text, _, reason = rest.partition("|")
            state = _STATES.get(state_text, "UNKNOWN")
            if state in ("PENDING", "RUNNING", "COMPLETING"):
                found[job_id] = JobStatus(job_id, state, reason=explain_reason(reason) if state == "PENDING" else None)
        return found

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


def describe(record: dict[str, str], state: str, restarts: int, end_line: str | None,
             accounted: JobStatus | None = None) -> str | None:
    """Say what happened to a job in Slurm's words: reason, requeues, who or what ended it.

    >>> describe({"Reason": "BeginTime", "EligibleTime": "2026-12-02T00:57:59"}, "PENDING", 1,
    ...          "JOB 2 ON node1 CANCELLED AT 2026-12-02T00:55:58 DUE TO NODE FAILURE")
    'node failure: Slurm ended the job (JOB 2 ON node1 CANCELLED AT 2026-12-02T00:55:58 DUE TO NODE FAILURE) and requeued it (Restarts=1); pending again: BeginTime: a requeued job may start again at 2026-12-02T00:57:59'
    >>> describe({"Reason": "TimeLimit"}, "TIMEOUT", 0, None)
    'TimeLimit: the job reached its walltime'
    """
    words = []
    reason = record.get("Reason")
    cause = _ENDED.search(f"*** {end_line} ***") if end_line else None
    # Slurm truncates a job's output when a requeued job starts again: once it has run again, the
    # last end line is how that start ended (a cancel while running has no cause), not why it was requeued.
    ran_again = _ran(record) or (cause is not None and cause.group("cause") is None)
    ended_now = state not in ("PENDING", "RUNNING", "COMPLETING") and ran_again
    if restarts and end_line and not ended_now:
        what = (cause.group("cause") or "cancellation").lower() if cause else "an earlier end"
        words.append(f"{what}: Slurm ended the job ({end_line}) and requeued it (Restarts={restarts})")
    elif restarts:
        words.append(f"requeued by Slurm (Restarts={restarts})")
    cancelled_after_restarts = state == "CANCELLED" and restarts
    if end_line and state != "PENDING" and (not restarts or ended_now) and not cancelled_after_restarts:
        words.append(f"Slurm: {end_line}")
    if accounted is not None and accounted.reason:
        words.append(accounted.reason)
    after = f"after {restarts} restart{'s' if restarts != 1 else ''}"
    if state == "PENDING" and reason == "BeginTime" and restarts:
        words.append(f"pending again: BeginTime: a requeued job may start again at {record.get('EligibleTime', '?')}")
    elif state == "PENDING" and restarts:
        words.append(f"pending again: {explain_reason(reason) or 'waiting to start'}")
    elif state == "PENDING" or (explain_reason(reason) and reason not in _WAIT_REASONS):
        if explain_reason(reason):
            words.append(explain_reason(reason))
    elif cancelled_after_restarts:
        how = f" ({end_line})" if end_line and ended_now else ""
        words.append(f"then cancelled while {'running' if ran_again else 'pending'}, {after}{how}")
    return "; ".join(words) or None


def _ran(record: dict[str, str]) -> bool:
    """Whether the job's latest start ran at all (``RunTime`` counts from it; 0 for a job cancelled while pending)."""
    return record.get("RunTime", "0:00:00").replace("-", ":").strip("0:") != ""


# Reasons that explain a wait; once a job has ended, a leftover one says nothing about how it ended.
_WAIT_REASONS = set(PENDING_REASONS) - {"TimeLimit", "NodeFail"}


def _last_end_line(record: dict[str, str], job_id: str) -> str | None:
    """The last ``*** JOB N ON host CANCELLED AT ... ***`` line Slurm wrote into the job's output."""
    found = None
    for name in {record.get("StdErr"), record.get("StdOut")} - {None, ""}:
        text = read_tail(name)
        if text is None:
            continue
        for match in _ENDED.finditer(text):
            if match.group("job") == job_id.split("_")[0]:
                found = match.group(0).strip("* ").split(", SEE ")[0]
    return found


_SACCT_MISSING: list[bool] = []  # set once sacct has said accounting is off: it will not change


def _sacct(job_id: str) -> JobStatus | None:
    """The job's final record from ``sacct`` (state, who cancelled it), or None without accounting."""
    if _SACCT_MISSING:
        return None
    try:
        output = run_command(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State,ExitCode,StdOut"], timeout=20)
    except BatchCommandError:
        _SACCT_MISSING.append(True)
        return None
    lines = [line.split("|") for line in output.splitlines() if line.strip()]
    if not lines:
        return None
    state_text, exit_code = lines[-1][0], lines[-1][1] if len(lines[-1]) > 1 else "0:0"
    word = state_text.split()[0] if state_text else "UNKNOWN"
    reason = END_STATES.get(word)
    by = _CANCELLED_BY.search(state_text)
    if by:
        reason = f"cancelled by {_user_name(int(by.group(1)))} (sacct: {state_text})"
    elif reason:
        reason = f"{word}: {reason}"
    code = exit_code.split(":")[0]
    return JobStatus(job_id, _STATES.get(word, "UNKNOWN"), reason=reason,
                     exit_code=int(code) if code.isdigit() else None,
                     log=lines[-1][2] if len(lines[-1]) > 2 and lines[-1][2] else None)


def _user_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
