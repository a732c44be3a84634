"""Dask's own idioms inside ``with hpcbridge.connect(...)``: the default client, concurrent.futures,
joblib, and ``map`` over several iterables as ``client.map`` does it, on a real local cluster."""

from __future__ import annotations

import concurrent.futures
import operator
import os
import subprocess
import sys
from collections.abc import Iterator

import cloudpickle
import dask
import dask.array as da
import distributed
import numpy as np
import pytest

from hpcbridge.client import runs as run_module
from hpcbridge.client.bridge import Bridge, connect
from hpcbridge.job import submit as jobs
from tests.conftest import module_local_job

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # f and the helpers run on the workers


def f(x):
    """The Sulis seed's function."""
    return x * x


def scaled_sum(a, b, weights, factor):
    return float((a + b) * weights.sum() * factor)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[jobs.SubmittedJob]:
    """A 2-worker local job for this module; each test attaches to it."""
    with module_local_job(tmp_path_factory, 2) as job:
        yield job


@pytest.fixture
def bridge(cluster: jobs.SubmittedJob) -> Iterator[Bridge]:
    with connect(cluster.scheduler_file, n_workers=2, timeout=60) as attached:
        yield attached


def test_while_attached_the_bridge_is_dasks_default_client_and_not_after(cluster: jobs.SubmittedJob) -> None:
    with connect(cluster.scheduler_file, n_workers=2, timeout=60) as bridge:
        assert distributed.get_client() is bridge.client
        total = da.ones((1000, 1000), chunks=(250, 250)).sum().compute()
        assert total == 1_000_000
        worker_pids = set(bridge.client.run(os.getpid).values())
        assert dask.delayed(os.getpid)().compute() in worker_pids  # ran on a worker, not here
    with pytest.raises(ValueError, match="No global client found"):
        distributed.get_client()


def test_set_as_default_false_opts_out(cluster: jobs.SubmittedJob) -> None:
    with connect(cluster.scheduler_file, n_workers=2, timeout=60, set_as_default=False) as bridge:
        assert bridge.n_workers == 2
        with pytest.raises(ValueError, match="No global client found"):
            distributed.get_client()


def test_the_executor_maps_the_seed_function_over_254_inputs_in_a_few_chunks(bridge: Bridge,
                                                                              monkeypatch) -> None:
    runs: list[run_module.Run] = []
    start = run_module.start
    monkeypatch.setattr(run_module, "start", lambda *a, **k: runs.append(start(*a, **k)) or runs[-1])
    with bridge.executor() as executor:
        assert isinstance(executor, concurrent.futures.Executor)
        assert list(executor.map(f, range(254))) == [x * x for x in range(254)]
        assert executor.submit(f, 12).result(timeout=60) == 144
        assert list(executor.map(operator.add, range(5), range(10, 15), chunksize=2)) == [10, 12, 14, 16, 18]
    assert len(runs[0].futures) < 254  # chunked, not one task per input
    assert runs[1].bounds == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(f, 1)


JOBLIB_SEED = """\
import os, sys
import joblib
import hpcbridge

def f(x):
    return x * x

with hpcbridge.connect(sys.argv[1], n_workers=2, timeout=60) as bridge:
    workers = set(bridge.client.run(os.getpid).values())
    with bridge.joblib():
        squares = joblib.Parallel()(joblib.delayed(f)(x) for x in range(254))
        places = set(joblib.Parallel()(joblib.delayed(os.getpid)() for _ in range(8)))
    with joblib.parallel_backend("dask"):  # the documented spelling: the bridge's client is the default
        assert joblib.Parallel()(joblib.delayed(f)(x) for x in range(3)) == [0, 1, 4]
assert squares == [x * x for x in range(254)], squares
assert places <= workers and os.getpid() not in places, (places, workers)
print("joblib ok", len(squares))
"""


def test_joblib_parallel_runs_the_seed_function_over_254_inputs_on_the_cluster(
        cluster: jobs.SubmittedJob, tmp_path) -> None:
    """As the seed writes it: f defined in the user's script (joblib hangs when a task cannot be unpickled)."""
    script = tmp_path / "seed.py"
    script.write_text(JOBLIB_SEED)
    done = subprocess.run([sys.executable, str(script), cluster.scheduler_file], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0 and "joblib ok 254" in done.stdout, done.stdout + done.stderr


def test_map_zips_several_iterables_like_client_map(bridge: Bridge) -> None:
    assert bridge.gather(bridge.map(np.add, [1, 2], [10, 20], progress=False), progress=False) == [11, 22]
    assert bridge.gather(bridge.map(np.add, [1, 2], [10, 20], progress=False), progress=False) == \
        bridge.client.gather(bridge.client.map(np.add, [1, 2], [10, 20]))
    weights = bridge.broadcast(np.ones(4))
    run = bridge.map(scaled_sum, range(3), np.arange(3.0), args=(weights, 0.5), progress=False)
    assert bridge.gather(run, progress=False) == [0.0, 4.0, 8.0]
    assert bridge.gather(bridge.map(scaled_sum, [1], [1], args=(weights, 1), progress=False), progress=False) == [8.0]
    bridge.release(weights)


def test_ambiguous_map_calls_are_refused_with_the_way_to_write_them(bridge: Bridge) -> None:
    handle = bridge.broadcast(np.ones(2))
    try:
        with pytest.raises(TypeError, match="argument 3 is broadcast .* args=\\(handle,\\)"):
            bridge.map(scaled_sum, [1, 2], handle)
        with pytest.raises(TypeError, match="argument 3 is a float, not an iterable of items.*args=\\(value,\\)"):
            bridge.map(operator.mul, [1, 2], 2.0)
        with pytest.raises(ValueError, match="different lengths \\(2, 3\\)"):
            bridge.map(np.add, [1, 2], [10, 20, 30])
        with pytest.raises(TypeError, match="args must be a tuple"):
            bridge.map(operator.mul, [1, 2], args=2.0)
        assert bridge.runs() == []
    finally:
        bridge.release(handle)
