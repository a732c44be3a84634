"""What a user touches on a live bridge: its repr, a run's len/result/iteration, release, a missing module."""

from __future__ import annotations

import re
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest

from hpcbridge.client.bridge import Bridge
from hpcbridge.client.missing_modules import ModuleMissing
from hpcbridge.job import submit as jobs
from tests.conftest import module_bridge

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the scheduler runs a helper below


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    """A 1-worker local job shared by this module's tests."""
    with module_bridge(tmp_path_factory, 1) as attached:
        yield attached


def test_bridge_repr_says_where_it_is_attached_its_job_and_workers(cluster) -> None:
    job, bridge = cluster
    shown = repr(bridge)
    assert re.fullmatch(rf"<Bridge tls://127\.0\.0\.1:\d+, job {job.job_id} \(local\): 1 workers, 1 threads, "
                        r"dashboard http://127\.0\.0\.1:\d+/status\?token=[\w-]+>", shown), shown


def test_a_run_has_a_length_a_result_and_iterates_in_input_order(cluster) -> None:
    _, bridge = cluster
    run = bridge.map(abs, range(-5, 5), chunk_size=3, progress=False)
    assert len(run) == 10 and run
    assert repr(run).startswith(f"<Run {run.name!r}: abs over 10 items in 4 chunks, ")
    assert run.result(timeout=60) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert list(run) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]  # the same results, not computed again
    assert run.name not in bridge.runs()  # collected, as gather(run) leaves it
    again = bridge.map(abs, [-7, 8], name=f"named-{uuid.uuid4().hex[:6]}", progress=False)
    assert list(bridge.run(again.name)) == [7, 8]  # a run found by name collects too


def test_releasing_twice_warns_and_returns_false_for_runs_broadcasts_and_names(cluster) -> None:
    _, bridge = cluster
    handle = bridge.broadcast([1, 2, 3])
    run = bridge.map(abs, [-1, -2], progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bridge.release(handle) is True
        assert bridge.release(run) is True
    assert handle.name not in bridge.broadcasts() and run.name not in bridge.runs()
    for again, what in ((handle, f"broadcast {handle.name!r}"), (handle.name, f"run or broadcast {handle.name!r}"),
                        (run, f"run {run.name!r}"), (run.name, f"run or broadcast {run.name!r}")):
        with pytest.warns(UserWarning, match=re.escape(what) + r" is not on this cluster \(already released"):
            assert bridge.release(again) is False
    collected = bridge.map(abs, [-3], progress=False)
    assert bridge.gather(collected, progress=False) == [3]
    with pytest.warns(UserWarning, match="already released or collected"):
        assert bridge.release(collected) is False


def test_a_module_the_cluster_lacks_is_named_with_where_and_what_to_do(cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    helper = f"edges_helper_{uuid.uuid4().hex[:8]}"  # a module only this process can import
    (tmp_path / f"{helper}.py").write_text("FACTOR = 3\n")
    (tmp_path / "user_code.py").write_text(f"import {helper}\n\ndef triple(x):\n    return {helper}.FACTOR * x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        from user_code import triple  # shipped by value by hpcbridge; the module it imports is not

        run = bridge.map(triple, range(4), progress=False)
        with pytest.raises(ModuleMissing) as raised:
            bridge.gather(run, progress=False)
        message = str(raised.value)
        assert f"module {helper!r} is not installed on the cluster" in message
        assert re.search(r"the scheduler at tls://127\.0\.0\.1:\d+ cannot import it", message), message
        assert f"bridge.client.upload_file('{tmp_path / helper}.py')" in message
        assert (raised.value.module, raised.value.where.split(" at ")[0]) == (helper, "the scheduler")
        with pytest.raises(ModuleMissing, match=f"a task could not start: module {helper!r} is not installed"):
            bridge.gather([bridge.submit(triple, 2)])  # futures of submit too
        bridge.release(run)
        bridge.client.upload_file(str(tmp_path / f"{helper}.py"))  # the way out the message gives
        assert bridge.gather(bridge.map(triple, range(4), progress=False), progress=False) == [0, 3, 6, 9]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_code", None)
        sys.modules.pop(helper, None)


def _scheduler_sys_path(folder: str, add: bool, dask_scheduler=None) -> None:
    """On the scheduler: put ``folder`` on its module path, or take it off again."""
    if add:
        sys.path.insert(0, folder)
    else:
        sys.path.remove(folder)


def test_a_module_only_the_scheduler_has_is_named_with_the_worker_that_lacks_it(cluster, tmp_path: Path) -> None:
    job, bridge = cluster
    helper = f"edges_helper_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{helper}.py").write_text("FACTOR = 5\n")
    (tmp_path / "user_code_w.py").write_text(f"import {helper}\n\ndef times5(x):\n    return {helper}.FACTOR * x\n")
    sys.path.insert(0, str(tmp_path))
    bridge.client.run_on_scheduler(_scheduler_sys_path, str(tmp_path), True)
    try:
        from user_code_w import times5

        workers = set(bridge.client.nthreads())
        run = bridge.map(times5, range(4), progress=False)
        with pytest.raises(ModuleMissing) as raised:
            bridge.gather(run, progress=False)
        assert raised.value.module == helper
        assert raised.value.where.removeprefix("worker ") in workers, raised.value.where  # that worker, by address
        assert "is not installed on the cluster (worker tls://127.0.0.1:" in str(raised.value)
        assert set(bridge.client.nthreads()) == workers  # the worker lived through it
        with pytest.raises(ModuleMissing, match=f"module {helper!r} is not installed on the cluster \\(a worker"):
            bridge.gather([bridge.submit(times5, 2)])
        bridge.release(run)
    finally:
        bridge.client.run_on_scheduler(_scheduler_sys_path, str(tmp_path), False)
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_code_w", None)
        sys.modules.pop(helper, None)


def streams_intervals(dask_scheduler=None) -> list[float]:
    return [stream.interval for stream in [*dask_scheduler.stream_comms.values(), *dask_scheduler.client_comms.values()]]


def test_a_bridge_shortens_the_clusters_message_batching_to_a_millisecond(cluster) -> None:
    """distributed's 10 ms / 5 ms / 2 ms batching was most of a short run's cost (hpcbridge/latency.py)."""
    from hpcbridge.client import latency

    _, bridge = cluster
    assert bridge.client.scheduler_comm.interval <= latency.INTERVAL_SECONDS
    intervals = bridge.client.run_on_scheduler(streams_intervals)
    assert intervals and max(intervals) <= latency.INTERVAL_SECONDS
