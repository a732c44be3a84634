"""PBS (PBS Pro, OpenPBS, Torque, and Slurm's Torque wrappers): ``qsub``, ``qstat -f``, ``qdel``.

``qsub`` needs the script as a file, and where the job's output goes is not always reported
back (Slurm's Torque wrappers ignore ``#PBS -o`` and show no ``Output_Path``), so each
submission keeps its script and output path under ``$HPCBRIDGE_HOME/pbs/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from hpcbridge.backends.base import BatchCommandError, JobNotFound, JobStatus, keep_script, read_tail, run_command
from hpcbridge.private_files import state_home, write_private_file

_JOB_ID = re.compile(r"^\s*(\d+(?:\[\d*\])?(?:\.[\w.-]+)?)\s*$")
_ATTRIBUTE = re.compile(r"^\s+([\w.]+) = (.*)$")
_STATES = {
    "Q": "PENDING", "H": "PENDING", "W": "PENDING", "T": "PENDING", "S": "PENDING",
    "R": "RUNNING", "B": "RUNNING", "E": "COMPLETING", "C": "COMPLETED", "F": "COMPLETED", "X": "COMPLETED",
}


# PBS Pro's negative exit statuses for jobs the server or MOM ended (pbs_job.h, "JOB_EXEC_*").
EXIT_STATUSES = {
    -29: ("TIMEOUT", "JOB_EXEC_KILL_WALLTIME: the job exceeded its walltime"),
    -28: ("FAILED", "JOB_EXEC_KILL_CPUT: the job exceeded its CPU time"),
    -27: ("FAILED", "JOB_EXEC_KILL_MEM: the job exceeded its memory"),
    -26: ("FAILED", "JOB_EXEC_KILL_VMEM: the job exceeded its virtual memory"),
    -25: ("FAILED", "JOB_EXEC_KILL_NCPUS_SUM: the job used more CPUs than it asked for"),
    -24: ("FAILED", "JOB_EXEC_KILL_NCPUS_BURST: the job used more CPUs than it asked for (burst)"),
}
# PBS Pro's substate of a job deleted with qdel, queued or running (JOB_SUBSTATE_TERMINATED); its
# job_state is F like a job that ran to its end, with no Exit_status when it never ran.
_SUBSTATE_DELETED = "91"
_PBS_KILLED = re.compile(r"=>> PBS: job killed: (?P<what>.*)")
_SLURM_ENDED = re.compile(r"\*\*\* JOB \d+ ON \S+ CANCELLED AT \S+(?: DUE TO (?P<cause>[A-Z ]+?))?(?:, SEE [^*]*)? \*\*\*")
_CAUSES = {"TIME LIMIT": "TIMEOUT", "NODE FAILURE": "FAILED", "PREEMPTION": "CANCELLED", None: "CANCELLED"}


def _last_end_line(log: Path | None) -> tuple[str, str] | None:
    """The last line in the job's output saying why the batch system ended it, with the state it means."""
    text = None if log is None else read_tail(log)
    if text is None:
        return None
    found = None
    for line in text.splitlines():
        killed, ended = _PBS_KILLED.search(line), _SLURM_ENDED.search(line)
        if killed:
            found = (f"PBS: job killed: {killed.group('what').strip()}",
                     "TIMEOUT" if "walltime" in killed.group("what") else "FAILED")
        elif ended and " JOB " in ended.group(0):
            found = (ended.group(0).strip("* ").split(", SEE ")[0], _CAUSES.get(ended.group("cause"), "FAILED"))
    return found


def parse_job_id(qsub_output: str) -> str:
    """Return the job id ``qsub`` printed (``4242.server`` on PBS Pro, ``4242`` on the wrappers).

    >>> parse_job_id("4242.pbs01\\n"), parse_job_id("17")
    ('4242.pbs01', '17')
    """
    match = _JOB_ID.match(qsub_output)
    if not match:
        raise ValueError(f"qsub printed no job id: {qsub_output.strip()!r}")
    return match.group(1)


def parse_qstat_full(text: str) -> dict[str, str]:
    """Return the ``key = value`` attributes of ``qstat -f`` output (continuation lines joined).

    >>> parse_qstat_full("Job Id: 7\\n    job_state = Q\\n    comment = Not Running: Insuff\\n\\ticient ncpus\\n")
    {'job_state': 'Q', 'comment': 'Not Running: Insufficient ncpus'}
    """
    attributes: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        attribute = _ATTRIBUTE.match(line)
        if attribute:
            last = attribute.group(1)
            attributes[last] = attribute.group(2)
        elif last and line.startswith("\t"):
            attributes[last] += line.strip()
    return attributes


class PBSBackend:
    """Submit, query and cancel PBS jobs with ``qsub``, ``qstat`` and ``qdel``."""

    name = "pbs"

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or state_home("pbs")

    def submit(self, script: str) -> str:
        token, script_path = keep_script(self.home, script)
        output = Path.cwd() / f"pbs-{token}.out"
        # One file for both streams with -j oe: PBS Pro, given `-e` to the same path as `-o` for a script
        # without `#PBS -j oe`, copied the empty error file over the output at the job's end.
        job_id = parse_job_id(run_command(["qsub", "-j", "oe", "-o", str(output), str(script_path)]))
        write_private_file(self.home / f"{_safe(job_id)}.json", json.dumps({"script": str(script_path), "log": str(output)}))
        return job_id

    def status(self, job_id: str) -> JobStatus:
        """The job's state from ``qstat -f``; how it ended from its exit status, comment and output.

        PBS says little in ``qstat`` once a job has ended, but it writes why it killed a job into
        the job's output (``=>> PBS: job killed: walltime 65 exceeded limit 60``), and so does
        Slurm under the Torque wrappers (``*** JOB 7 ON node1 CANCELLED AT ... DUE TO TIME
        LIMIT ***``): the last such line decides TIMEOUT, CANCELLED or a node failure (FAILED).
        A job deleted with qdel is CANCELLED by its PBS Pro substate (91), queued or running.
        """
        attributes = self._show(job_id)
        state = _STATES.get(attributes.get("job_state", ""), "UNKNOWN")
        exit_code = int(attributes["Exit_status"]) if attributes.get("Exit_status", "").lstrip("-").isdigit() else None
        if state == "COMPLETED" and exit_code not in (None, 0):
            state = "FAILED"
        if attributes.get("job_state") == "F" and attributes.get("substate") == _SUBSTATE_DELETED:
            state = "CANCELLED"
        log = self.log_path(job_id)
        reason = attributes.get("comment")
        restarts = int(attributes["run_count"]) - 1 if attributes.get("run_count", "").isdigit() else 0
        if exit_code in EXIT_STATUSES:
            state, words = EXIT_STATUSES[exit_code]
            reason = "; ".join(filter(None, [f"Exit_status={exit_code}: {words}", reason]))
        ended = _last_end_line(log) if state in ("COMPLETED", "FAILED", "COMPLETING", "PENDING", "RUNNING") else None
        if ended is not None:
            line, meaning = ended
            if state in ("COMPLETED", "FAILED", "COMPLETING"):
                state = meaning
            if state in ("PENDING", "RUNNING") and restarts == 0:
                pass  # a line from an earlier run of a requeued job: said below
            reason = "; ".join(filter(None, [reason, line]))
        if restarts > 0:
            reason = "; ".join(filter(None, [f"requeued (run_count={restarts + 1})", reason]))
        return JobStatus(job_id, state, reason=reason, exit_code=exit_code, log=str(log or "") or None,
                         restarts=max(restarts, 0))

    def cancel(self, job_id: str) -> None:
        self._show(job_id)
        run_command(["qdel", job_id])

    def log_path(self, job_id: str) -> Path | None:
        record = self.home / f"{_safe(job_id)}.json"
        if record.exists():
            return Path(json.loads(record.read_text())["log"])
        return None

    def queued(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The jobs among ``job_ids`` that wait or run, from one ``qstat -f`` of them all (see
        :func:`~hpcbridge.backends.base.statuses`); a job that has ended is left out for :meth:`status`."""
        found = {}
        try:
            listed = run_command(["qstat", "-f", *job_ids])
        except BatchCommandError as error:
            if not _finished_refusal(error):
                raise
            listed = error.stdout  # PBS Pro lists the others and refuses the ended ones (exit 35)
        for block in re.split(r"^Job Id:[ \t]*", listed, flags=re.M)[1:]:
            job_id = block.split("\n", 1)[0].strip()
            attributes = parse_qstat_full(block)
            state = _STATES.get(attributes.get("job_state", ""), "UNKNOWN")
            if state in ("PENDING", "RUNNING"):
                found[job_id] = JobStatus(job_id, state, reason=attributes.get("comment") if state == "PENDING" else None)
        return found

    @staticmethod
    def _show(job_id: str) -> dict[str, str]:
        """``qstat -f``; for a job that has ended, PBS Pro's history, ``qstat -x -f``.

        PBS Pro answers ``qstat -f`` of an ended job with exit 35 ("Job has finished, use -x or
        -H"); Torque's ``-x`` means XML, so it is asked only then.
        """
        try:
            try:
                return parse_qstat_full(run_command(["qstat", "-f", job_id]))
            except BatchCommandError as error:
                if not _finished_refusal(error):
                    raise
            return parse_qstat_full(run_command(["qstat", "-x", "-f", job_id]))
        except BatchCommandError as error:
            if error.returncode == 153 or "Unknown Job" in error.stderr:
                raise JobNotFound(f"PBS does not know job {job_id}") from None
            raise


def _finished_refusal(error: BatchCommandError) -> bool:
    """Whether ``qstat`` refused a job because it has ended and history needs ``-x`` (PBS Pro)."""
    return error.returncode == 35 or "use -x or -H" in error.stderr


def _safe(job_id: str) -> str:
    return re.sub(r"[^\w.-]", "_", job_id)
