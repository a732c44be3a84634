"""The local backend: run the rendered script as processes on this machine, no batch system.

Each job gets a folder (owner-only, like everything hpcbridge writes) under ``$HPCBRIDGE_HOME/local`` (default ``~/.hpcbridge/local``) with its
script, its output and, once it ends, its exit code, written by the job's own wrapper so that
status works after the job is gone. The job runs in its own session, so cancelling it signals
exactly the processes it started, with no signal blocked (whatever the submitting program blocked).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

from hpcbridge.backends.base import JobNotFound, JobStatus
from hpcbridge.private_files import make_private_dir, open_private_log, state_home, write_private_file

FORGET_WAIT = 5.0  # seconds an ended job's wrapper may take to exit before its folder is removed
_WRAPPER = 'bash "$1"; echo $? > "$2"'


class LocalBackend:
    """Run jobs as local process groups; job ids look like ``local-1a2b3c4d``."""

    name = "local"

    def __init__(self, home: Path | None = None) -> None:
        self.home = home or state_home(self.name)

    def submit(self, script: str) -> str:
        job_id = f"{self.name}-{secrets.token_hex(4)}"
        folder = make_private_dir(self.home / job_id)
        script_path = write_private_file(folder / "job.sh", script)
        with open_private_log(folder / "output.log") as log:
            process = subprocess.Popen(
                ["bash", "-c", _WRAPPER, f"hpcbridge-{self.name}", str(script_path), str(folder / "exitcode")],
                cwd=os.getcwd(),
                env={**os.environ, "HPCBRIDGE_JOB_ID": job_id},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_default_signals,
            )
        write_private_file(folder / "pid", f"{process.pid} {_start_time(process.pid)}\n")
        return job_id

    def status(self, job_id: str) -> JobStatus:
        folder = self._folder(job_id)
        log = str(folder / "output.log")
        exit_file = folder / "exitcode"
        if exit_file.exists() and exit_file.read_text().strip():
            code = int(exit_file.read_text().strip())
            state = "COMPLETED" if code == 0 else "FAILED"
            if (folder / "cancelled").exists():
                state = "CANCELLED"
            return JobStatus(job_id, state, exit_code=code, log=log)
        if self._alive(folder):
            return JobStatus(job_id, "RUNNING", log=log)
        if (folder / "cancelled").exists():
            return JobStatus(job_id, "CANCELLED", log=log)
        return JobStatus(job_id, "UNKNOWN", reason="the job's processes are gone without an exit code", log=log)

    def cancel(self, job_id: str) -> None:
        folder = self._folder(job_id)
        if not self._alive(folder):
            return
        (folder / "cancelled").touch()
        pid = int((folder / "pid").read_text().split()[0])
        os.killpg(pid, signal.SIGTERM)

    def forget(self, job_id: str) -> bool:
        """Remove an ended job's folder (its script, output and exit code); a running job's is kept.

        Returns True when the folder was removed.
        """
        try:
            folder = self._folder(job_id)
        except JobNotFound:
            return False
        deadline = time.monotonic() + FORGET_WAIT
        while self._alive(folder):  # the wrapper exits a moment after it wrote the exit code
            if not (folder / "exitcode").exists() or time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def log_path(self, job_id: str) -> Path | None:
        return self._folder(job_id) / "output.log"

    def _folder(self, job_id: str) -> Path:
        folder = self.home / job_id
        if not job_id.startswith(f"{self.name}-") or "/" in job_id or not (folder / "pid").exists():
            raise JobNotFound(f"no {self.name} job {job_id!r} under {self.home}")
        return folder

    @staticmethod
    def _alive(folder: Path) -> bool:
        """True while the job's wrapper process runs (checked against its start time, not just its pid)."""
        pid_text, started = (folder / "pid").read_text().split()
        return _start_time(int(pid_text)) == started


def _default_signals() -> None:
    """In the job's first process, before it runs: no signal blocked, SIGTERM's default action.

    A process started from a program that blocks signals (Octave blocks SIGTERM, SIGHUP, SIGINT
    and others in its main thread) passes the mask on to every process it starts; a job started
    from there would ignore ``cancel``'s SIGTERM and run on.
    """
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _start_time(pid: int) -> str:
    """The kernel's start time of a live, non-zombie process, or ``gone``; guards against pid reuse."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return "gone"
    return "gone" if fields[0] == "Z" else fields[19]
