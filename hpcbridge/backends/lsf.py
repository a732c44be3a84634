"""LSF: ``bsub < script``, ``bjobs -o`` (or ``bjobs -l`` where ``-o`` is unknown), ``bkill``.

Tested on a real OpenLava 4.0 (LSF's commands as LSF 4-era clusters have them:
tests/cluster/test_openlava.py) and, for what OpenLava cannot show (``bjobs -o`` of LSF 9 and
later, blaunch over several hosts), on IBM's documented output formats and an emulated LSF.
"""

from __future__ import annotations

import re
import os
from pathlib import Path

from hpcbridge.backends.base import BatchCommandError, JobNotFound, JobStatus, run_command

_SUBMITTED = re.compile(r"Job <(\d+(?:\[\d+\])?)> is submitted")
_STATES = {
    "PEND": "PENDING", "PSUSP": "PENDING", "WAIT": "PENDING",
    "RUN": "RUNNING", "USUSP": "RUNNING", "SSUSP": "RUNNING", "PROV": "RUNNING",
    "DONE": "COMPLETED", "EXIT": "FAILED", "ZOMBI": "FAILED", "UNKWN": "UNKNOWN",
}
_FIELDS = ("stat", "exit_code", "output_file", "exit_reason", "pend_reason")
_NOT_FOUND = re.compile(r"Job <[^>]*> is not found")
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


# bjobs -l wraps its lines at 80 columns and carries them on indented by 21 spaces, mid-word.
_LONG_CONTINUATION = " " * 21
# The LSF installations (by LSF_ENVDIR) whose bjobs refused -o (before LSF 9.1, OpenLava): bjobs -l
# is read there instead, without asking -o again.
_WITHOUT_BJOBS_FORMAT: set[str] = set()
_LONG_FIELDS = {
    "stat": re.compile(r"Status ?<(\w+)>"),
    "exit_code": re.compile(r"Exited ?with ?exit ?code ?(\d+)"),
    "cwd": re.compile(r"\bCWD ?<([^>]*)>"),
    "output_file": re.compile(r"Output File ?<([^>]*)>"),
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


def parse_bjobs_long(text: str, job_id: str) -> dict[str, str]:
    """The fields of ``parse_bjobs`` from ``bjobs -l JOB``: the one format every LSF prints.

    Older LSFs (and OpenLava) have no ``bjobs -o``. The output file is given there as written at
    submission (``job-%J.out``, relative to the job's CWD): it is returned expanded and absolute.
    Only the first job of the output is read (an array's first element).

    >>> parse_bjobs_long("Job Id <7>, User <a>, Status <EXIT>, Queue <normal>, Command <x>\\n"
    ...                  "Sun Dec  6 20:27:51: Exited with exit code 3.", "7")
    {'stat': 'EXIT', 'exit_code': '3'}
    """
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(_LONG_CONTINUATION) and line.strip() and lines:
            lines[-1] += line[len(_LONG_CONTINUATION):]
        elif line.startswith("Job Id <") and lines and any(item.startswith("Job Id <") for item in lines):
            break
        else:
            lines.append(line)
    block = "\n".join(lines)
    fields = {key: match.group(1) for key, pattern in _LONG_FIELDS.items() if (match := pattern.search(block))}
    pending = re.search(r"PENDING REASONS:\n(.*?)(?:\n\s*\n|\Z)", block, re.S)
    if pending:
        fields["pend_reason"] = "; ".join(line.strip().rstrip(";") for line in pending.group(1).splitlines() if line.strip())
    termination = re.search(r"^.*\bTERM_[A-Z_]+.*$", block, re.M)
    if termination:
        fields["exit_reason"] = termination.group(0).strip()
    cwd = fields.pop("cwd", "")
    if "output_file" in fields:
        number, _, index = job_id.partition("[")
        shown = re.search(r"Job Id <\d+\[(\d+)\]>", block)
        output = fields["output_file"].replace("%J", number).replace("%I", index.rstrip("]") or (shown.group(1) if shown else "0"))
        directory = cwd.replace("$HOME", os.path.expanduser("~"), 1)
        fields["output_file"] = os.path.join(directory, output) if directory else output
    return fields


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

    def _show(self, job_id: str) -> dict[str, str]:
        if os.environ.get("LSF_ENVDIR", "") not in _WITHOUT_BJOBS_FORMAT:
            format_option = " ".join(_FIELDS) + " delimiter='|'"
            try:
                output = self._bjobs(["-noheader", "-o", format_option, job_id], job_id)
                return parse_bjobs(output.splitlines()[0])
            except BatchCommandError as error:
                if "invalid option" not in error.stderr and "Usage: bjobs" not in error.stderr:
                    raise
                _WITHOUT_BJOBS_FORMAT.add(os.environ.get("LSF_ENVDIR", ""))
        return parse_bjobs_long(self._bjobs(["-l", job_id], job_id), job_id)

    @staticmethod
    def _bjobs(options: list[str], job_id: str) -> str:
        try:
            output = run_command(["bjobs", *options])
        except BatchCommandError as error:
            if _NOT_FOUND.search(error.stderr + error.stdout):
                raise JobNotFound(f"LSF does not know job {job_id}") from None
            raise
        if _NOT_FOUND.search(output) or not output.strip():
            raise JobNotFound(f"LSF does not know job {job_id}")
        return output
