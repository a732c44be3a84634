"""LSF's commands for real: OpenLava 4.0, built from source by tests/cluster/openlava-cluster.

What runs for real here: ``bsub < script`` reading the rendered ``#BSUB`` lines, ``bjobs`` (its
``-l`` form: OpenLava has no ``bjobs -o``, so hpcbridge falls back to it, as on any LSF before
9.1), ``bkill``, the job's output file, ``blaunch -z`` starting the workers on the one host, and
arrays. What OpenLava cannot show stays in tests/test_lsf_emulated.py and tests/test_batch_status.py:
blaunch over several hosts (broken in OpenLava), ``bjobs -o`` and its TERM_* reasons, and the
memory requests with units (``-M 300MB``, ``rusage[mem=300MB]``: LSF 10.1.0.2 and later), which
OpenLava refuses; the jobs here therefore ask for no memory.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import cloudpickle
import pytest
from click.testing import CliRunner

from hpcbridge.backends import JobNotFound, get_backend
from hpcbridge.backends.base import BatchCommandError
from hpcbridge.cli import main as cli
from hpcbridge.client.attach import wait_for_scheduler_file
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from tests.conftest import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # worker_facts runs on the workers


def bjobs_long(cluster, job_id: str) -> str:
    """``bjobs -l`` with its 80-column wrapping undone (continuation lines are indented by 21 spaces)."""
    text = cluster.run("bjobs", "-l", job_id).stdout
    return re.sub(r"\n {21}", "", text)


def worker_facts() -> tuple[str | None, list[str]]:
    """On a worker: its LSB_JOBID and the programs of its ancestors, nearest first."""
    import os

    ancestors, pid = [], os.getppid()
    while pid > 1:
        ancestors.append(open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode())
        pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    return os.environ.get("LSB_JOBID"), ancestors


def test_openlava_scheduler_file_job_runs_its_workers_with_blaunch(openlava_cluster, batch_spec, batch_jobs) -> None:
    job = jobs.submit(batch_spec(openlava_cluster, "lsf", ntasks_per_node=2, job_name="ol-dask"))
    batch_jobs.append(job)
    with connect(job.scheduler_file, n_workers=2, timeout=120) as bridge:
        assert job.status().state == "RUNNING"
        # bsub read the rendered #BSUB lines: the name, the slots, the span and the run limit.
        shown = bjobs_long(openlava_cluster, job.job_id)
        assert "Job Name <ol-dask>" in shown
        assert "2 Processors Requested" in shown and "Requested Resources <span[ptile=2]>" in shown
        assert re.search(r"RUNLIMIT\s+10\.0 min", shown), shown
        # Both workers came from blaunch: the job's tasks, started by OpenLava's res, not children of the script.
        assert bridge.n_workers == 2
        facts = list(bridge.client.run(worker_facts).values())
        assert [job_id for job_id, _ in facts] == [job.job_id] * 2
        for _, ancestors in facts:
            assert any(name.endswith("/res") for name in ancestors), ancestors
            assert not any(name.endswith("/sbatchd") for name in ancestors), ancestors
        assert bridge.gather(bridge.map(abs, range(-5, 0))) == [5, 4, 3, 2, 1]
        bridge.shutdown()
    assert wait_for(lambda: job.status().finished, timeout=60)
    status = job.status()
    assert (status.state, status.exit_code) == ("COMPLETED", 0), status
    assert status.log == str(Path.cwd() / f"ol-dask-{job.job_id}.out")
    logs = CliRunner().invoke(cli, ["logs", job.job_id, "--scheduler", "lsf"])
    assert logs.exit_code == 0, logs.output
    assert "hpcbridge: the scheduler exited (status 0)" in logs.output


def test_openlava_exit_code_output_file_and_unknown_jobs(openlava_cluster, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # bsub writes the output file where it is run
    backend = get_backend("lsf")
    job_id = backend.submit("#!/bin/bash\n#BSUB -J ol-exit\n#BSUB -o ol-exit-%J.out\necho hello from the job\nexit 7\n")
    assert wait_for(lambda: backend.status(job_id).finished, timeout=60)
    status = backend.status(job_id)
    assert (status.state, status.exit_code) == ("FAILED", 7), status
    assert status.log == str(tmp_path / f"ol-exit-{job_id}.out")
    assert "hello from the job" in Path(status.log).read_text()
    with pytest.raises(JobNotFound):
        backend.status("99999")


def test_openlava_bkill_cancels_a_running_job(openlava_cluster, batch_spec, batch_jobs) -> None:
    job = jobs.submit(batch_spec(openlava_cluster, "lsf", job_name="ol-cancel"))
    batch_jobs.append(job)
    wait_for_scheduler_file(job.scheduler_file, timeout=60)
    job.cancel()
    assert wait_for(lambda: job.status().finished, timeout=60)
    # OpenLava says no TERM_OWNER (LSF 9's bjobs -o does): the job ends EXIT with the signal's code.
    assert job.status().state == "FAILED"
    assert job.status().exit_code is not None and job.status().exit_code > 128
    assert wait_for(lambda: not Path(job.scheduler_file).exists(), timeout=30)


def test_openlava_refuses_memory_units_with_bsubs_own_words(openlava_cluster, batch_spec) -> None:
    """What LSF 9.1 and later accept (``-M 300MB``) OpenLava refuses: the submission fails with bsub's reason."""
    spec = batch_spec(openlava_cluster, "lsf", mem_per_cpu="300M")
    with pytest.raises(BatchCommandError, match="MEMLIMT value should be a positive integer"):
        jobs.submit(spec)


def test_openlava_array_runs_every_element_with_its_index(openlava_cluster, batch_spec, batch_jobs, tmp_path) -> None:
    script = tmp_path / "element.py"
    script.write_text("import os\nprint('index', os.environ['HPCBRIDGE_ARRAY_INDEX'])\n")
    job = jobs.submit(batch_spec(openlava_cluster, "lsf", mode="array", array="1-3", array_throttle=2,
                                 client_script=str(script), job_name="ol-array"))
    batch_jobs.append(job)
    outputs = [tmp_path / f"ol-array-{job.job_id}_{index}.out" for index in (1, 2, 3)]
    assert wait_for(lambda: all(path.exists() and "index" in path.read_text() for path in outputs), timeout=60)
    assert [f"index {index}" in path.read_text() for index, path in enumerate(outputs, 1)] == [True] * 3
    shown = bjobs_long(openlava_cluster, job.job_id)  # bsub read -J "ol-array[1-3]%2": three elements
    assert sorted(re.findall(r"Job Name <(ol-array\[\d\])>", shown)) == ["ol-array[1]", "ol-array[2]", "ol-array[3]"], shown
    assert wait_for(lambda: job.status().finished, timeout=30)
    assert job.status().state == "COMPLETED"
