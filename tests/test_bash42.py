"""Rendered scripts run on bash 4.2 (CentOS 7) and 4.4 (RHEL/Rocky 8), not only on this machine's bash 5.

No bash 4.2 can be installed here, so two checks stand in for it: the rendered text is searched
for every construct bash 4.2 lacks, and clusters are run with ``BASH_ENV`` pointing at
``tests/bash42-env.sh``, which makes bash 5 refuse the bash-5-only ``wait`` options and variables
at run time. The same cluster on the real Slurm is in tests/cluster/test_slurm.py.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.job.render import render_script
from tests.conftest import job_processes, wait_for
from tests.test_render import SPECS

BASH42_ENV = Path(__file__).with_name("bash42-env.sh")

# What bash 4.2 does not have, and the version that brought it.
NEWER_THAN_42 = {
    r"\bwait\s+-[a-z]*[npf]": "wait -n (4.3), -f (5.0), -p (5.1)",
    r"\$\{[^}]*@[QEPAaKkUuL]\}": "${x@Q} and the other @ transformations (4.4, 5.1)",
    r"\b(EPOCHSECONDS|EPOCHREALTIME|SRANDOM|BASH_ARGV0)\b": "bash 5 variables",
    r"\b(declare|local|typeset)\s+-[a-zA-Z]*n": "namerefs (4.3)",
    r"\b(mapfile|readarray)\s+(-\w+\s+)*-d": "mapfile -d (4.4)",
    r"\[-\d+\]\}": "negative array subscripts (4.3)",
    r"\b(inherit_errexit|localvar_inherit|localvar_unset|assoc_expand_once|patsub_replacement)\b":
        "shopt options of 4.4 and later",
}
# An array that may be empty (`A=()`, `A=(${X:+...})`) is "unbound" under set -u before bash 4.4.
_MAYBE_EMPTY_ARRAY = re.compile(r"^\s*(\w+)=\((\)|\$\{\w+:\+)", re.MULTILINE)


def bash42_environment() -> dict[str, str]:
    """Variables that make bash 5 behave like bash 4.2 where a script could tell the difference."""
    return {"BASH_ENV": str(BASH42_ENV), "BASH_COMPAT": "42"}


def test_the_stand_in_refuses_what_bash_42_lacks() -> None:
    env = {**os.environ, **bash42_environment()}
    # What the templates did before: on CentOS 7 the job died with "FIRST_EXITED: unbound variable".
    old_template = subprocess.run(["bash", "-uc", 'sleep 0 & wait -n -p FIRST "$!"; echo "$FIRST"'],
                                  env=env, capture_output=True, text=True, timeout=10)
    assert old_template.returncode != 0 and "invalid option" in old_template.stderr
    assert "FIRST: unbound variable" in old_template.stderr
    seconds = subprocess.run(["bash", "-uc", 'echo "$EPOCHSECONDS"'], env=env, capture_output=True, text=True,
                             timeout=10)
    assert seconds.returncode != 0 and "unbound variable" in seconds.stderr
    plain = subprocess.run(["bash", "-c", 'sleep 0 & wait "$!"; echo ok'], env=env, capture_output=True,
                           text=True, timeout=10)
    assert plain.stdout == "ok\n"


@pytest.mark.parametrize("name", sorted(SPECS))
def test_rendered_scripts_use_nothing_newer_than_bash_42(name: str) -> None:
    script = render_script(SPECS[name])
    code = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("#"))
    for pattern, what in NEWER_THAN_42.items():
        found = re.search(pattern, code)
        assert not found, f"{name}: {found.group(0)!r} needs a newer bash: {what}"
    for array in _MAYBE_EMPTY_ARRAY.findall(code):
        bare = re.findall(r'(?<!\+)"\$\{' + array[0] + r'\[@\]\}"', code)
        assert not bare, f'{name}: "${{{array[0]}[@]}}" may be empty: bash < 4.4 calls it unbound under set -u'


@pytest.fixture
def bash42(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in bash42_environment().items():
        monkeypatch.setenv(key, value)


def test_a_local_cluster_starts_computes_and_ends_cleanly_under_bash_42(bash42, local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=2))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=90) as bridge:
        assert bridge.gather(bridge.map(operator.neg, range(100))) == [-i for i in range(100)]
        bridge.shutdown()
    assert wait_for(lambda: job.status().finished, timeout=30)
    log = Path(job.status().log).read_text()
    assert (job.status().state, job.status().exit_code) == ("COMPLETED", 0), log
    assert "invalid option" not in log and "unbound variable" not in log
    assert "hpcbridge: the scheduler exited (status 0)" in log
    assert wait_for(lambda: not job_processes(job.job_id), timeout=30)


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""  # gone meanwhile


def _worker_pids(job_id: str, with_their_processes: bool = False) -> list[int]:
    """The job's `dask worker` commands (and, if asked, the worker processes their nannies started)."""
    markers = (b"distributed.cli.dask_worker", b"multiprocessing") if with_their_processes else \
        (b"distributed.cli.dask_worker",)
    return [pid for pid in job_processes(job_id) if any(m in _command_line(pid) for m in markers)]


def test_workers_that_all_leave_cleanly_end_the_job_normally(bash42, local_spec, local_jobs) -> None:
    """Workers retiring before the walltime exit 0: the job is COMPLETED, not FAILED (issue 15.2)."""
    job = jobs.submit(local_spec(ntasks_per_node=2))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=90):
        pass
    for pid in _worker_pids(job.job_id):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # the dask worker command closes cleanly, as when it retires
    assert wait_for(lambda: job.status().finished, timeout=60)
    log = Path(job.status().log).read_text()
    assert (job.status().state, job.status().exit_code) == ("COMPLETED", 0), log
    assert "every worker left as planned (status 0)" in log
    assert wait_for(lambda: not job_processes(job.job_id), timeout=30)


def test_workers_that_all_die_fail_the_job(bash42, local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=2))
    local_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=90):
        pass
    for pid in _worker_pids(job.job_id, with_their_processes=True):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: job.status().finished, timeout=60)
    log = Path(job.status().log).read_text()
    assert (job.status().state, job.status().exit_code) == ("FAILED", 1), log
    assert "every worker exited (status" in log
    assert wait_for(lambda: not job_processes(job.job_id), timeout=30)
