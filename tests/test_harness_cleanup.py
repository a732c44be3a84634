"""The suite cleans up after itself also when pytest is stopped by SIGTERM (``timeout``, a cancelled CI run)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import job_processes, wait_for

HANGING = """
import time
import pytest
from tests.conftest import module_local_job

@pytest.fixture(scope="module")
def job(tmp_path_factory):
    with module_local_job(tmp_path_factory, 1) as started:
        yield started

def test_hangs(job):
    print("JOB", job.job_id, flush=True)
    time.sleep(300)
"""


def test_a_sigterm_to_pytest_tears_down_its_local_jobs(tmp_path: Path) -> None:
    (tmp_path / "test_hanging.py").write_text(HANGING)
    env = {**os.environ, "HPCBRIDGE_TEST_SESSION": secrets.token_hex(8)}  # its own leftover registry
    inner = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-s", "-n0", "-p", "no:randomly",
                              "-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path / "test_hanging.py")],
                             cwd=Path(__file__).resolve().parent.parent, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    job_id = None
    try:
        for line in inner.stdout:
            if line.startswith("JOB "):
                job_id = line.split()[1]
                break
        assert job_id and job_processes(job_id), "the inner test did not start its job"
        inner.send_signal(signal.SIGTERM)
        inner.wait(timeout=60)
        assert wait_for(lambda: not job_processes(job_id), timeout=30), job_processes(job_id)
    finally:
        if inner.poll() is None:
            inner.kill()
            inner.wait()
        for pid in job_processes(job_id) if job_id else []:  # what a failed teardown left: ours, by PID
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
