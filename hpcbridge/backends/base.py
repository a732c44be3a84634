"""What every batch-system backend provides, and the errors they raise.

A backend is a handful of small hooks around the batch system's own commands: submit a
rendered script, ask for a job's state (with the reason it waits, in words), cancel it, and say
where its output goes. Backends never render: they take the script text the renderer produced.
"""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, Sequence

from hpcbridge.private_files import make_private_dir, write_private_file


@dataclass(frozen=True)
class JobStatus:
    """A job's state as the batch system reports it, normalised across backends.

    ``state`` is one of PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED, TIMEOUT or
    UNKNOWN (a node failure is FAILED); ``reason`` says in the batch system's own words why the
    job waits or how it ended: its reason code, who cancelled it, a walltime or a node failure,
    a requeue. ``restarts`` counts how often the batch system requeued the job (a requeued job
    is PENDING or RUNNING again, as a new cluster).
    """

    job_id: str
    state: str
    reason: str | None = None
    exit_code: int | None = None
    log: str | None = None
    restarts: int = 0

    @property
    def finished(self) -> bool:
        """True once the job can no longer run (its outcome is final)."""
        return self.state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")

    def as_dict(self) -> dict[str, object]:
        """Plain values, for ``--json`` and for MATLAB."""
        return {**asdict(self), "finished": self.finished}


class Backend(Protocol):
    """The hooks one batch system implements."""

    name: str

    def submit(self, script: str) -> str:
        """Submit the script text; return the job id."""

    def status(self, job_id: str) -> JobStatus:
        """Return the job's current state."""

    def cancel(self, job_id: str) -> None:
        """Ask the batch system to end the job."""

    def log_path(self, job_id: str) -> Path | None:
        """Where the job's output goes, when known."""


def statuses(backend: Backend, job_ids: Sequence[str],
             errors: dict[str, Exception] | None = None) -> dict[str, JobStatus]:
    """The states of many jobs, with as few questions to the batch system as it allows.

    A backend that lists many jobs at once (a ``queued(job_ids)`` hook: Slurm's ``squeue -j a,b,c``,
    PBS's ``qstat -f a b c``) is asked once for all of them; only a job it does not list as waiting or
    running (it has ended, so it is asked once more) is asked alone with :meth:`Backend.status`, which
    finds how it ended. A job the batch system does not know is UNKNOWN; a job it could not be asked
    about is left out, with the error in ``errors`` when given.
    """
    wanted = list(dict.fromkeys(job_ids))
    found: dict[str, JobStatus] = {}
    queued = getattr(backend, "queued", None)
    if queued is not None and wanted:
        try:
            found = {job_id: status for job_id, status in queued(wanted).items() if job_id in wanted}
        except BatchCommandError:
            found = {}  # e.g. every id already purged: asked one by one below
    for job_id in wanted:
        if job_id in found:
            continue
        try:
            found[job_id] = backend.status(job_id)
        except JobNotFound as error:
            found[job_id] = JobStatus(job_id, "UNKNOWN", reason=str(error))
        except Exception as error:  # the batch system did not answer: the caller asks again later
            if errors is not None:
                errors[job_id] = error
    return found


class BatchCommandError(RuntimeError):
    """A batch-system command failed; carries the command, exit code, stdout and stderr."""

    def __init__(self, command: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.command = list(command)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = (stderr or stdout).strip() or "no output"
        super().__init__(f"{' '.join(self.command)} failed with exit code {returncode}: {detail}")


class JobNotFound(LookupError):
    """The batch system does not know (or no longer knows) this job id."""


def run_command(command: Sequence[str], stdin: str | None = None, timeout: float = 60) -> str:
    """Run a batch-system command and return its stdout; raise :class:`BatchCommandError`."""
    try:
        done = subprocess.run(
            list(command), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise BatchCommandError(command, 127, "", f"{command[0]}: command not found on this machine") from None
    except subprocess.TimeoutExpired:
        raise BatchCommandError(command, -1, "", f"no answer after {timeout:g} s") from None
    if done.returncode != 0:
        raise BatchCommandError(command, done.returncode, done.stdout, done.stderr)
    return done.stdout


def keep_script(home: Path, script: str) -> tuple[str, Path]:
    """Keep a job's script as an owner-only file in the backend's folder ``home`` before it is
    submitted; return the fresh token that names it (and the job's output) and its path.

    Batch systems that read the script from a file (PBS, Grid Engine) get this path, and the job's
    record keeps it, so what ran can be read again after the job.
    """
    make_private_dir(home)
    token = secrets.token_hex(4)
    return token, write_private_file(home / f"job-{token}.sh", script)


def read_tail(path: str | Path, nbytes: int = 65536) -> str | None:
    """The last ``nbytes`` of a job's output file as text, or None when it cannot be read.

    The lines that say why a batch system ended a job are written at the end of its output.
    """
    try:
        with open(path, "rb") as stream:
            stream.seek(0, 2)
            stream.seek(max(0, stream.tell() - nbytes))
            return stream.read().decode(errors="replace")
    except OSError:
        return None
