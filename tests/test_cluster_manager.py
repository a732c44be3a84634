"""``hpcbridge.Cluster`` and ``hpcbridge.security`` on the local backend (real local jobs, real Dask, TLS).

The real-Slurm test of the same object is ``tests/cluster/test_cluster_manager_slurm.py``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from distributed import Client

import hpcbridge
from hpcbridge.backends.job import SubmittedJob
from hpcbridge.job import submit as jobs
from hpcbridge.job.spec import SpecError
from tests.conftest import job_processes, wait_for


def _options(tmp_path: Path, **values: object) -> dict[str, object]:
    return {"scheduler": "local", "python": sys.executable, "mem_per_cpu": "400M",
            "scheduler_file": str(tmp_path / "{job_id}" / "scheduler.json"), **values}


def _ended(job: SubmittedJob) -> bool:
    return job.status().finished and not job_processes(job.job_id)


def test_a_cluster_scales_by_joined_jobs_serves_a_tls_client_and_close_cancels_everything(tmp_path) -> None:
    started: list[SubmittedJob] = []
    try:
        with hpcbridge.Cluster(**_options(tmp_path), quiet=True) as cluster:
            started.append(cluster.job)
            assert cluster.name == cluster.job.job_id
            assert cluster.scheduler_address.startswith("tls://")
            assert "hpcbridge" in cluster.job_script() and "join" in cluster.job_script(worker_job=True)
            with Client(cluster) as client:  # security from the job's certificates, as for hpcbridge.connect
                assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6

                with pytest.raises(hpcbridge.ArgumentError, match="n"):
                    cluster.scale(-1)
                cluster.scale(3)  # the job's own worker and two worker jobs of one worker each
                started.extend(cluster.worker_jobs)
                assert len(cluster.worker_jobs) == 2
                client.wait_for_workers(3, timeout=90)
                first, second = cluster.worker_jobs

                cluster.scale(2)  # the most recent worker job goes, after its worker retired
                assert cluster.worker_jobs == [first]
                assert wait_for(lambda: _ended(second), timeout=30)
                assert wait_for(lambda: len(cluster.scheduler_info["workers"]) == 2, timeout=30)
                assert client.submit(sum, [4, 5]).result(timeout=60) == 9

                cluster.scale(0)  # never below the job's own worker
                assert cluster.worker_jobs == []
                assert wait_for(lambda: _ended(first), timeout=30)

            assert "token=" in cluster.dashboard_link
            html = cluster._repr_html_()
            assert f"<strong>Job:</strong> {cluster.job.job_id} (local)" in html and "Workers:" in html
            logs = cluster.get_logs()
            assert any(key.startswith(f"Job {cluster.job.job_id} (") for key in logs)
            assert "Scheduler" in logs

            with cluster.bridge() as bridge:  # hpcbridge's API on the same cluster
                assert bridge.gather(bridge.map(abs, [-1, -2, 3])) == [1, 2, 3]

            attached = hpcbridge.Cluster.from_job(cluster.job.job_id, "local", quiet=True)
            assert attached.scheduler_address == cluster.scheduler_address and attached.own_workers == 1
            attached.close()  # attached, not started here: the cluster runs on
            assert cluster.job.status().state == "RUNNING"
        assert all(wait_for(lambda job=job: _ended(job), timeout=30) for job in started), \
            [(job.job_id, job.status().state, job_processes(job.job_id)) for job in started]
    finally:
        for job in started:
            if not job.status().finished:
                job.cancel()


def test_adapt_adds_worker_jobs_for_a_backlog_and_cancels_them_when_idle_keeping_the_own_worker(tmp_path) -> None:
    started: list[SubmittedJob] = []
    try:
        with hpcbridge.Cluster(**_options(tmp_path), quiet=True) as cluster, Client(cluster) as client:
            started.append(cluster.job)
            cluster.adapt(minimum=0, maximum=3, interval="500ms", wait_count=2, target_duration="1s")
            futures = client.map(time.sleep, [0.5] * 40, pure=False)
            assert wait_for(lambda: len(cluster.worker_jobs) == 2, timeout=60), cluster.worker_jobs
            started.extend(cluster.worker_jobs)
            client.wait_for_workers(3, timeout=90)
            client.gather(futures)
            del futures
            assert wait_for(lambda: not cluster.worker_jobs, timeout=60), cluster.worker_jobs
            assert all(wait_for(lambda job=job: _ended(job), timeout=30) for job in started[1:])
            assert len(cluster.scheduler_info["workers"]) == 1  # minimum=0, but the job's own worker stays
            assert cluster.job.status().state == "RUNNING"
    finally:
        for job in started:
            if not job.status().finished:
                job.cancel()


def test_the_readme_labextension_factory_starts_a_cluster_as_dask_labextension_does(tmp_path) -> None:
    """dask-labextension 7 starts a cluster with ``await factory(*args, **kwargs, asynchronous=True)`` and
    then calls ``scale`` without awaiting it. The package is not installable here, so these are its
    steps, reproduced on the README's configuration (on the local backend instead of Slurm)."""
    import asyncio
    import importlib
    import re

    import dask.config
    import yaml

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```yaml\n(labextension:.*?)```", readme, re.S).group(1)
    factory = yaml.safe_load(block)["labextension"]["factory"]
    overrides = {"scheduler": "local", "python": sys.executable, "scheduler_file": str(tmp_path / "{job_id}" / "s.json")}
    with dask.config.set({"labextension.factory": {**factory, "kwargs": {**factory["kwargs"], **overrides}}}):
        settings = dask.config.get("labextension.factory")
    made = getattr(importlib.import_module(settings["module"]), settings["class"])
    assert made is hpcbridge.Cluster

    async def as_the_extension_does() -> tuple[SubmittedJob, list[SubmittedJob], int, str]:
        cluster = await made(*settings["args"], **settings["kwargs"], asynchronous=True)
        try:
            cluster.scale(cluster.own_workers + 1)  # not awaited, as the extension calls it
            for _ in range(600):  # one worker job comes, of a node's workers (ntasks_per_node)
                if len(cluster.scheduler_info["workers"]) == cluster.own_workers + cluster.worker_job_spec.workers:
                    break
                await asyncio.sleep(0.2)
            return cluster.job, cluster.worker_jobs, len(cluster.scheduler_info["workers"]), cluster.dashboard_link
        finally:
            await cluster.close()

    job, joined, workers, link = asyncio.run(as_the_extension_does())
    assert workers == 4 + 4 and len(joined) == 1 and "token=" in link  # ntasks_per_node: 4 in the README
    assert all(wait_for(lambda each=each: _ended(each), timeout=30) for each in [job, *joined])


def test_a_bad_option_is_one_line_naming_it_and_submits_nothing(tmp_path, hpcbridge_home) -> None:
    with pytest.raises(SpecError, match="nodes"):
        hpcbridge.Cluster(**_options(tmp_path, nodes="two"))
    with pytest.raises(SpecError, match="workers_per_job"):
        hpcbridge.Cluster(**_options(tmp_path), workers_per_job=0)
    with pytest.raises(hpcbridge.ArgumentError, match="timeout"):
        hpcbridge.Cluster(**_options(tmp_path), timeout=-1)
    with pytest.raises(SpecError, match="mode"):
        hpcbridge.Cluster(**_options(tmp_path, mode="array", client_script="x.py", array="1-2"))
    assert not (hpcbridge_home / "submitted").exists()


def test_a_cluster_whose_scheduler_does_not_come_in_time_is_cancelled_and_says_so(tmp_path, hpcbridge_home) -> None:
    with pytest.raises(hpcbridge.ConnectError, match="hpcbridge cancelled job local-") as raised:
        hpcbridge.Cluster(**_options(tmp_path, setup=["sleep 60"]), timeout=3, quiet=True)  # no scheduler yet
    job = jobs.find(str(raised.value).rsplit("cancelled job ", 1)[1].split(",")[0], "local")
    assert job is not None and wait_for(lambda: _ended(job), timeout=30), job
    with pytest.raises(hpcbridge.ConnectError, match=r"ended \(FAILED\)") as raised:
        hpcbridge.Cluster(**_options(tmp_path, setup=["exit 3"]), timeout=60, quiet=True)  # fails before it
    assert "cancelled" not in str(raised.value)


def test_security_lets_a_plain_dask_client_into_a_tls_cluster(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(ntasks_per_node=1))
    local_jobs.append(job)
    with hpcbridge.connect(job.scheduler_file, n_workers=1, timeout=60):
        pass
    with pytest.raises(TypeError, match="TLS expects a `ssl_context`"):  # what Dask alone does
        Client(scheduler_file=job.scheduler_file, timeout="10s")
    with Client(scheduler_file=job.scheduler_file, security=hpcbridge.security(job.scheduler_file),
                timeout="30s") as client:
        assert client.submit(pow, 2, 10).result(timeout=60) == 1024
    with pytest.raises(hpcbridge.ConnectError, match="no scheduler file at"):
        hpcbridge.security(Path(job.scheduler_file).with_name("missing.json"))
    with pytest.raises(hpcbridge.ArgumentError, match="scheduler_file"):
        hpcbridge.security(42)
