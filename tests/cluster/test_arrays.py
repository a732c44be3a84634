"""Job arrays for independent chunks, on the real Slurm and through the Torque wrappers' qsub."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from hpcbridge.job import submit as jobs
from hpcbridge.job.spec import JobSpec
from tests.conftest import wait_for

ELEMENT_SCRIPT = """\
import json, os, sys, time
started = time.time()
time.sleep(1.5)
index = int(os.environ["HPCBRIDGE_ARRAY_INDEX"])
with open(os.path.join(sys.argv[1], f"element-{index}.json"), "w") as out:
    json.dump({"index": index, "started": started, "ended": time.time(), "argv": sys.argv[2:],
               "first": os.environ["HPCBRIDGE_ARRAY_FIRST"], "last": os.environ["HPCBRIDGE_ARRAY_LAST"]}, out)
"""


def most_at_once(records: list[dict]) -> int:
    """The largest number of elements whose run times overlap."""
    events = sorted([(r["started"], 1) for r in records] + [(r["ended"], -1) for r in records])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


@pytest.fixture
def element_script(tmp_path: Path) -> Path:
    script = tmp_path / "element.py"
    script.write_text(ELEMENT_SCRIPT)
    (tmp_path / "results").mkdir()
    return script


@pytest.mark.parametrize(("scheduler", "flavor"), [("slurm", "pbspro"), ("pbs", "torque")])
def test_array_runs_every_element_with_its_index_and_respects_the_throttle(
    slurm_cluster, element_script, tmp_path, monkeypatch, scheduler, flavor
) -> None:
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    spec = JobSpec(scheduler=scheduler, pbs_flavor=flavor, mode="array", array="1-6", array_throttle=2,
                   mem_per_cpu="100M", walltime="10m", python=sys.executable, client_script=str(element_script),
                   client_args=(str(results), "x y"))
    job = jobs.submit(spec)
    assert job.scheduler_file is None
    try:
        assert wait_for(lambda: len(list(results.glob("element-*.json"))) == 6, timeout=120)
        assert wait_for(lambda: job.status().finished, timeout=60), job.status()
    finally:
        if not job.status().finished:
            job.cancel()
    assert job.status().state == "COMPLETED"
    records = [json.loads(path.read_text()) for path in results.glob("element-*.json")]
    assert sorted(r["index"] for r in records) == [1, 2, 3, 4, 5, 6]
    assert {(r["first"], r["last"]) for r in records} == {("1", "6")}
    assert all(r["argv"] == ["x y"] for r in records)
    assert most_at_once(records) == 2  # in parallel, but never more than the throttle
