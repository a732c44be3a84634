"""Grid Engine (Son of Grid Engine, Univa/Altair GE, OGS): ``qsub``, ``qstat``, ``qacct``, ``qdel``.

Grid Engine forgets a job as soon as it ends: ``qstat`` then no longer lists it, and how it
ended is in the accounting only (``qacct -j``), which the qmaster writes after its
``flush_time`` (15 s by default). Where a job's output goes is not asked back either, so each
submission keeps its script, output path and whether hpcbridge cancelled it under
``$HPCBRIDGE_HOME/sge/`` (as the PBS backend does). Tested on a real Son of Grid Engine 8.1.9
(tests/cluster/test_sge.py).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

from hpcbridge.backends.base import BatchCommandError, JobNotFound, JobStatus, keep_script, run_command
from hpcbridge.private_files import make_private_dir, state_home, write_private_file

_JOB_ID = re.compile(r"^\s*(\d+)(?:\.\d+-\d+:\d+)?\s*$")
_ARRAY_DIRECTIVE = re.compile(r"^#\$\s+-t\s", re.M)
# qstat's state letters (man qstat): d deleted, E error, h hold, r running, R restarted, s/S/T
# suspended, t transferring, w waiting, q queued.
# qacct's "failed" codes that mean the batch system ended the job (sge_jobs.h "failure codes").
FAILURES = {
    "37": ("TIMEOUT", "the qmaster ended the job at a limit it enforces (h_rt, h_cpu or h_vmem)"),
    "100": ("FAILED", "the job was killed (by qdel, or a signal) after it started"),
}
# A job that left the queue without an accounting record this long after hpcbridge first saw it gone was
# deleted before it ran (only jobs that run are accounted).
ACCOUNTING_GRACE = 60.0


def parse_job_id(qsub_output: str) -> str:
    """The job number ``qsub -terse`` printed (``4242``, or ``4242.1-10:1`` for an array).

    >>> parse_job_id("4242\\n"), parse_job_id("17.1-4:1\\n")
    ('4242', '17')
    """
    match = _JOB_ID.match(qsub_output)
    if not match:
        raise ValueError(f"qsub printed no job id: {qsub_output.strip()!r}")
    return match.group(1)


def parse_qstat_jobs(text: str) -> dict[str, list[str]]:
    """The state letters of each job in ``qstat -u '*'`` (one entry per listed task of an array).

    >>> parse_qstat_jobs("job-ID prior name user state\\n---\\n  7 0.5 x root r 12/06/2026 22:39:33 all.q@n1 4\\n"
    ...                  "  8 0.5 x root qw 12/06/2026 22:39:33 4 1-3:1\\n")
    {'7': ['r'], '8': ['qw']}
    """
    jobs: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[0].isdigit():
            jobs.setdefault(fields[0], []).append(fields[4])
    return jobs


def parse_qacct(text: str) -> list[dict[str, str]]:
    """The records of ``qacct -j``, in the order qacct prints them (its accounting file's order).

    >>> parse_qacct("=====\\nhostname     node1\\nfailed       0    \\nexit_status  7\\n")
    [{'hostname': 'node1', 'failed': '0', 'exit_status': '7'}]
    """
    records: list[dict[str, str]] = []
    for line in text.splitlines():
        if line.startswith("====="):
            records.append({})
        elif records and line.strip():
            key, _, value = line.partition(" ")
            records[-1][key] = value.strip()
    return [record for record in records if record]


def job_records(records: list[dict[str, str]]) -> list[dict[str, str]]:
    """The record of the job itself for each array task, without its parallel tasks' records.

    A parallel job's tasks (started with ``qrsh -inherit``) are accounted as records of the same
    job; Grid Engine writes each when it ends and the job's own when the whole job has ended,
    so the job's record is the last one of its task.
    """
    last: dict[str, dict[str, str]] = {}
    for record in records:
        last[record.get("taskid", "undefined")] = record
    return list(last.values())


def ended_state(records: list[dict[str, str]]) -> tuple[str, int | None, str | None]:
    """State, exit code and reason of an ended job from its accounting records (an array: its worst task)."""
    worst: tuple[str, int | None, str | None] = ("COMPLETED", 0, None)
    for record in job_records(records):
        failed = record.get("failed", "0").split(":", 1)
        code, words = failed[0].strip(), failed[1].strip() if len(failed) > 1 else ""
        exit_status = record.get("exit_status", "0").split()[0]
        exit_code = int(exit_status) if exit_status.lstrip("-").isdigit() else None
        task = "" if record.get("taskid", "undefined") == "undefined" else f"task {record['taskid']}: "
        if code != "0":
            state, meaning = FAILURES.get(code, ("FAILED", "Grid Engine could not run the job"))
            reason = f"{task}qacct failed {code}{f' ({words})' if words else ''}: {meaning}; exit_status {exit_status}"
            return state, exit_code, reason
        if exit_code:
            worst = ("FAILED", exit_code, f"{task}qacct exit_status {exit_status}")
    return worst


class SGEBackend:
    """Submit, query and cancel Grid Engine jobs with ``qsub``, ``qstat``, ``qacct`` and ``qdel``."""

    name = "sge"

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or state_home("sge")

    def submit(self, script: str) -> str:
        token, script_path = keep_script(self.home, script)
        # Grid Engine expands $TASK_ID in -o: each array task its own file.
        suffix = ".$TASK_ID" if _ARRAY_DIRECTIVE.search(script) else ""
        output = Path.cwd() / f"sge-{token}{suffix}.out"
        job_id = parse_job_id(run_command(["qsub", "-terse", "-j", "y", "-o", str(output), str(script_path)]))
        self._write_record(job_id, {"script": str(script_path), "log": str(output)})
        return job_id

    def status(self, job_id: str) -> JobStatus:
        """Waiting or running from ``qstat``; how it ended from ``qacct -j`` once it has left the queue.

        A waiting job's reason is ``qstat -j``'s "scheduling info" (where the site keeps
        ``schedd_job_info`` on) or its error reason (state E). A job hpcbridge cancelled is
        CANCELLED; one that left the queue without an accounting record is COMPLETING until the
        accounting is written, and CANCELLED after :data:`ACCOUNTING_GRACE` (deleted before it ran, or
        the site keeps no accounting).
        """
        log = self.log_path(job_id)
        log_text = str(log) if log else None
        listed = self.queued([job_id]).get(job_id)
        if listed is not None:
            if listed.state == "PENDING":
                return JobStatus(job_id, "PENDING", reason=self._waiting_reason(job_id), log=log_text)
            return JobStatus(job_id, listed.state, reason=listed.reason, log=log_text)
        record = self._read_record(job_id)
        try:
            records = parse_qacct(run_command(["qacct", "-j", job_id]))
        except BatchCommandError as error:
            said = error.stderr + error.stdout
            if "not found" not in said and "No such file" not in said:  # no accounting file before any job ended
                raise
            records = []
        if records:
            state, exit_code, reason = ended_state(records)
            if record.get("cancelled") and state in ("FAILED", "COMPLETED"):
                state, reason = "CANCELLED", "; ".join(filter(None, ["cancelled with qdel", reason]))
            return JobStatus(job_id, state, reason=reason, exit_code=exit_code, log=log_text)
        if not record:
            raise JobNotFound(f"Grid Engine does not know job {job_id} (qstat and qacct)")
        if record.get("cancelled") == "PENDING":
            return JobStatus(job_id, "CANCELLED", reason="cancelled with qdel before it ran", log=log_text)
        gone_since = record.setdefault("gone_since", time.time())
        self._write_record(job_id, record)
        if time.time() - gone_since > ACCOUNTING_GRACE:
            return JobStatus(job_id, "CANCELLED", log=log_text, reason=(
                f"left the queue {ACCOUNTING_GRACE:g} s ago without an accounting record: deleted before it ran"))
        return JobStatus(job_id, "COMPLETING", log=log_text,
                         reason="ended; Grid Engine's accounting (qacct) has not yet written how")

    def cancel(self, job_id: str) -> None:
        record = self._read_record(job_id)
        listed = self.queued([job_id]).get(job_id)
        if listed is None:
            self.status(job_id)  # JobNotFound for an id Grid Engine never had
            return
        if record:  # whether it ran: a job that ran is accounted (qacct), one that waited is not
            self._write_record(job_id, {**record, "cancelled": listed.state})
        run_command(["qdel", job_id])

    def log_path(self, job_id: str) -> Path | None:
        log = self._read_record(job_id).get("log")
        return Path(log) if log else None

    def queued(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The jobs among ``job_ids`` that wait or run, from one ``qstat -u '*'`` (see
        :func:`~hpcbridge.backends.base.statuses`); a job that has ended is not listed there."""
        wanted = set(job_ids)
        found = {}
        for job_id, states in parse_qstat_jobs(run_command(["qstat", "-u", "*"])).items():
            if job_id not in wanted:
                continue
            letters = set("".join(states))
            if "E" in letters:
                found[job_id] = JobStatus(job_id, "PENDING", reason="Grid Engine put the job in error state (Eqw): "
                                          "see qstat -j; it waits until qmod -cj clears it or qdel removes it")
            elif "d" in letters:
                found[job_id] = JobStatus(job_id, "COMPLETING", reason="being deleted (qdel)")
            elif letters & {"s", "S", "T"}:
                found[job_id] = JobStatus(job_id, "RUNNING", reason="suspended (qstat state s, S or T)")
            elif letters & {"r", "t"}:
                found[job_id] = JobStatus(job_id, "RUNNING")
            else:
                found[job_id] = JobStatus(job_id, "PENDING", reason="on hold (qstat state h)" if "h" in letters else None)
        return found

    def _waiting_reason(self, job_id: str) -> str | None:
        """``qstat -j``'s scheduling info (and error reason) for a waiting job, joined on one line."""
        try:
            text = run_command(["qstat", "-j", job_id])
        except BatchCommandError:
            return None
        reasons, keep = [], False
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if line[:1].strip():
                keep = key.strip() in ("scheduling info", "error reason    1", "error reason")
                if keep and value.strip():
                    reasons.append(value.strip())
            elif keep and line.strip():
                reasons.append(line.strip())
        return "; ".join(reasons) or None

    def _record_path(self, job_id: str) -> Path:
        return self.home / (re.sub(r"[^\w.-]", "_", job_id) + ".json")

    def _read_record(self, job_id: str) -> dict:
        try:
            return json.loads(self._record_path(job_id).read_text())
        except (OSError, ValueError):
            return {}

    def _write_record(self, job_id: str, record: dict) -> None:
        make_private_dir(self.home)
        write_private_file(self._record_path(job_id), json.dumps(record))
