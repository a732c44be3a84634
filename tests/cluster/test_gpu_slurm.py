"""GPU workers on the harness's real Slurm, its one node declaring two GPUs (``slurm-cluster up --gpus 2``).

The GPUs are device files made for the test (gres.conf); no GPU is needed for Slurm to bind one:
without cgroups it binds by setting each task's ``CUDA_VISIBLE_DEVICES``, which is what the
workers report. Workers of a GPU job offer the Dask resource ``GPU``; ``map(..., resources=...)``
runs only on them, also in a cluster of CPU workers joined by a GPU worker job.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from hpcbridge.backends.job import SubmittedJob
from hpcbridge.cli import main as cli
from hpcbridge.client.arguments import ArgumentError
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from tests.cluster.conftest import SlurmCluster, running_cluster


@pytest.fixture(scope="module")
def gpu_cluster() -> Iterator[SlurmCluster]:
    """One node of 4 CPUs and 2 (fake) GPUs."""
    with running_cluster(1, "--gpus", "2") as cluster:
        yield cluster


def where(item: int) -> str:
    """The worker that ran ``item`` (it sleeps a little, so that every worker could take items)."""
    import time

    from distributed import get_worker

    time.sleep(0.05)
    return get_worker().address


def test_each_worker_of_a_gpu_job_sees_its_own_gpu_and_offers_it(gpu_cluster, batch_spec, batch_jobs) -> None:
    job = jobs.submit(batch_spec(gpu_cluster, "slurm", ntasks_per_node=2, gpus_per_task=1, mem_per_cpu="300M"))
    batch_jobs.append(job)

    def visible_devices() -> str | None:  # nested: client.run sends it by value (workers cannot import tests)
        return os.environ.get("CUDA_VISIBLE_DEVICES")

    with connect(job.scheduler_file, n_workers=2, timeout=90) as bridge:
        devices = bridge.client.run(visible_devices)
        offered = [info["resources"] for info in bridge.client.scheduler_info(n_workers=-1)["workers"].values()]
        bridge.shutdown()
    assert sorted(devices.values()) == ["0", "1"], devices
    assert offered == [{"GPU": 1}, {"GPU": 1}]


def test_a_map_asking_for_a_gpu_runs_only_on_the_joined_gpu_workers(gpu_cluster, batch_spec, batch_jobs) -> None:
    cpus = jobs.submit(batch_spec(gpu_cluster, "slurm", ntasks_per_node=2, mem_per_cpu="300M", job_name="cpus"))
    batch_jobs.append(cpus)
    with connect(cpus.scheduler_file, n_workers=2, timeout=90) as bridge:
        with pytest.raises(ArgumentError, match=r"resources: \{'GPU': 1.0\} is not allowed.*offer none"):
            bridge.map(where, range(4), resources={"GPU": 1})  # no GPU worker yet: refused, not waiting for ever
        assert bridge.runs() == []
        joined = CliRunner().invoke(cli, [
            "scale", cpus.job_id, "--add", "1", "--scheduler", "slurm", "--gpus-per-task", "1", "--time", "10m",
            "--mem-per-cpu", "300M", "--interface", gpu_cluster.interface, "--python", sys.executable, "--json"])
        assert joined.exit_code == 0, joined.output
        batch_jobs.append(SubmittedJob(json.loads(joined.output.splitlines()[-1])["job_id"], "slurm", None,
                                       joins=cpus.job_id))
        bridge.client.wait_for_workers(3, timeout=90)
        workers = bridge.client.scheduler_info(n_workers=-1)["workers"]
        gpu_workers = {address for address, info in workers.items() if info["resources"].get("GPU")}
        on_gpus = bridge.gather(bridge.map(where, range(60), resources={"GPU": 1}, chunk_size=1))
        anywhere = bridge.gather(bridge.map(where, range(60), chunk_size=1))
        bridge.shutdown()
    assert len(gpu_workers) == 1
    assert set(on_gpus) == gpu_workers  # all 60 items, and only there
    assert len(set(anywhere)) == 3  # without resources, every worker takes items
