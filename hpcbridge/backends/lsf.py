"""LSF: ``bsub < script``, ``bjobs -o``, ``bkill``.

No LSF runs where hpcbridge is tested: the parsing here follows IBM's documented output formats
and is tested on those; the scripts themselves are run under an emulated LSF environment.
"""

from __future__ import annotations

import re
from pathlib import Path

from hpcbridge.backends.base import BatchCommandError, JobNotFound, JobStatus, run_command

_SUBMITTED = re.compile(r"Job <(\d+(?:\[\d+\])?)> is submitted")
_STATES = {
    "PEND": "PENDING", "PSUSP": "PENDING", "WAIT": "PENDING",
    "RUN": "RUNNING", "USUSP": "RUNNING", "SSUSP": "RUNNING", "PROV": "RUNNING",
    "DONE": "COMPLETED", "EXIT": "FAILED", "ZOMBI": "FAILED", "UNKWN": "UNKNOWN",
}
_FIELDS = ("stat", "exit_code", "output_file", "exit_reason", "pend_reason")
_TERMINATION = re.compile(r"TERM_[A-Z_]+")
# LSF's termination reasons (IBM's "Termination reasons displayed by bacct, bhist, and bjobs"):
# the state they mean here, and their words.
TERMINATIONS = {
    "TERM_RUNLIMIT": ("TIMEOUT", "the job reached its run time limit (walltime)"),
    "TERM_DEADLINE": ("TIMEOUT", "the job's deadline passed"),
    "TERM_OWNER": ("CANCELLED", "killed by its owner (bkill)"),
    "TERM_FORCE_OWNER": ("CANCELLED", "killed by its owner without time for cleanup"),
    "TERM_ADMIN": ("CANCELLED", "killed by root or an LSF administrator"),
    "TERM_FORCE_ADMIN": ("CANCELLED", "killed by root or an LSF administrator without time for cleanup"),
    "TERM_PREEMPT": ("CANCELLED", "killed after preemption"),
    "TERM_REQUEUE_OWNER": ("PENDING", "killed and requeued by its owner"),
    "TERM_REQUEUE_ADMIN": ("PENDING", "killed and requeued by root or an LSF administrator"),
    "TERM_MEMLIMIT": ("FAILED", "killed after reaching its memory limit"),
    "TERM_CPULIMIT": ("FAILED", "killed after reaching its CPU time limit"),
    "TERM_LOAD": ("FAILED", "killed after the host's load exceeded a threshold"),
    "TERM_UNKNOWN": ("FAILED", "LSF cannot determine why the job ended"),
    "TERM_ZOMBIE": ("FAILED", "the job's host stopped answering and LSF killed the job as a zombie"),
}


def parse_job_id(bsub_output: str) -> str:
    """Return the id from ``bsub``'s ``Job <1234> is submitted to queue <normal>.``

    >>> parse_job_id("Job <1234> is submitted to queue <normal>.\\n")
    '1234'
    """
    match = _SUBMITTED.search(bsub_output)
    if not match:
        raise ValueError(f"bsub printed no job id: {bsub_output.strip()!r}")
    return match.group(1)


def parse_bjobs(line: str) -> dict[str, str]:
    """Split one line of ``bjobs -noheader -o "stat exit_code output_file exit_reason pend_reason delimiter='|'"``.

    The pending reason comes last because it is free text. ``-`` means no value.

    >>> parse_bjobs("PEND|-|/home/a/job-1.out|-|Job's resource requirements not satisfied")["pend_reason"]
    "Job's resource requirements not satisfied"
    """
    values = line.strip().split("|", len(_FIELDS) - 1)
    return {key: value.strip() for key, value in zip(_FIELDS, values) if value.strip() not in ("", "-")}


class LSFBackend:
    """Submit, query and cancel LSF jobs with ``bsub``, ``bjobs`` and ``bkill``."""

    name = "lsf"

    def submit(self, script: str) -> str:
        return parse_job_id(run_command(["bsub"], stdin=script))

    def status(self, job_id: str) -> JobStatus:
        fields = self._show(job_id)
        state = _STATES.get(fields.get("stat", ""), "UNKNOWN")
        exit_code = int(fields["exit_code"]) if fields.get("exit_code", "").isdigit() else None
        if state == "COMPLETED":
            exit_code = 0
        reason = fields.get("pend_reason") if state == "PENDING" else None
        termination = _TERMINATION.search(fields.get("exit_reason", ""))
        if termination and termination.group(0) in TERMINATIONS:
            meaning, words = TERMINATIONS[termination.group(0)]
            if state == "FAILED" or meaning == "PENDING":
                state = state if meaning == "PENDING" else meaning
            reason = "; ".join(filter(None, [f"{termination.group(0)}: {words}", reason]))
        elif fields.get("exit_reason"):
            reason = "; ".join(filter(None, [fields["exit_reason"], reason]))
        if fields.get("stat") == "UNKWN":
            reason = "LSF has lost contact with the job's host (UNKWN)"
        return JobStatus(job_id, state, reason=reason, exit_code=exit_code, log=fields.get("output_file"))

    def cancel(self, job_id: str) -> None:
        self._show(job_id)
        run_command(["bkill", job_id])

    def log_path(self, job_id: str) -> Path | None:
        output = self._show(job_id).get("output_file")
        return Path(output) if output else None

    @staticmethod
    def _show(job_id: str) -> dict[str, str]:
        format_option = " ".join(_FIELDS) + " delimiter='|'"
        try:
            output = run_command(["bjobs", "-noheader", "-o", format_option, job_id])
        except BatchCommandError as error:
            if "not found" in (error.stderr + error.stdout):
                raise JobNotFound(f"LSF does not know job {job_id}") from None
            raise
        if "not found" in output or not output.strip():
            raise JobNotFound(f"LSF does not know job {job_id}")
        return parse_bjobs(output.splitlines()[0])
