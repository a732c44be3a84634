"""protocol=ucx, end to end, with the real UCX (distributed-ucxx) on this CPU-only machine.

distributed-ucxx pins an older distributed, so it lives in its own virtual environment
(.venv-ucx, made on first use); the cluster and the client both run there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hpcbridge.job import submit as jobs
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
UCX_VENV = ROOT / ".venv-ucx"

CLIENT = """\
import json, sys
import hpcbridge
with hpcbridge.connect(sys.argv[1], n_workers=2, timeout=120) as bridge:
    total = sum(bridge.gather(bridge.map(abs, range(-100, 0))))
    print(json.dumps({"scheduler": bridge.client.scheduler.address, "workers": sorted(bridge.client.nthreads()),
                      "total": total}))
    bridge.shutdown()
"""


@pytest.fixture(scope="module")
def ucx_python() -> Path:
    """The Python of a virtual environment with UCX for Dask (ucxx) and hpcbridge."""
    python = UCX_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(UCX_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "ucxx-cu12", "distributed-ucxx-cu12", "--editable", str(ROOT)], check=True, timeout=900)
    return python


def test_ucx_cluster_runs_end_to_end(ucx_python, local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=2, protocol="ucx", python=str(ucx_python)))
    local_jobs.append(job)
    done = subprocess.run([str(ucx_python), "-c", CLIENT, job.scheduler_file], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["scheduler"].startswith("ucx://")
    assert len(report["workers"]) == 2 and all(w.startswith("ucx://") for w in report["workers"])
    assert report["total"] == 5050
    assert wait_for(lambda: job.status().finished, timeout=60)
    assert job.status().state == "COMPLETED", Path(job.status().log).read_text()[-3000:]


def test_ucx_without_distributed_ucxx_fails_before_starting_dask(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(protocol="ucx"))
    local_jobs.append(job)
    assert wait_for(lambda: job.status().finished, timeout=30)
    assert job.status().state == "FAILED"
    log = Path(job.status().log).read_text()
    assert "hpcbridge: protocol ucx needs the distributed-ucxx package" in log
    assert "dask_scheduler" not in log and "distributed.scheduler" not in log
