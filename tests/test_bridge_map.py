"""Chunked map on a real local cluster: order, chunking, stacking, progress, errors, survival."""

from __future__ import annotations

import functools
import operator
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from hpcbridge.client import futures, planning
from hpcbridge.client.bridge import Bridge, connect
from hpcbridge.client.planning import plan_chunks
from hpcbridge.client.runs import ItemError
from hpcbridge.cluster import chunks
from hpcbridge.job import submit as jobs
from hpcbridge.rundir import function_identity
from tests.conftest import module_bridge

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below run on the cluster


def fragile_square(x: int) -> int:
    if x == 13:
        raise ValueError("thirteen is unlucky")
    return x * x


def row_times(item: int, row: np.ndarray) -> np.ndarray:
    return row * item


def slow_first_call(item: int, token: str) -> int:
    """Takes 3 s on its first call in each worker process, as importing a big library does."""
    if not hasattr(sys, token):
        time.sleep(3)
        setattr(sys, token, True)
    return item


def pause(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    """A 2-worker local job shared by this module's tests."""
    with module_bridge(tmp_path_factory, 2) as attached:
        yield attached


def executed(bridge: Bridge, run: str) -> int:
    """How many items of ``run`` the workers executed, all workers together."""
    return sum(counts.get(run, 0) for counts in bridge.client.run(chunks.executed_items).values())


def test_guided_chunks_cover_every_item_once_and_shrink_towards_the_end() -> None:
    bounds = plan_chunks(100, 10_000_100, threads=8, seconds_per_item=1e-6)  # 10 s of work
    assert bounds[0][0] == 100 and bounds[-1][1] == 10_000_100
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [high - low for low, high in bounds]
    assert sizes == sorted(sizes, reverse=True)
    assert len(bounds) < 300
    assert sizes[-1] * 1e-6 <= planning.SHORTEST_CHUNK_SECONDS * 2  # the tail is short work
    slow = plan_chunks(0, 1000, threads=4, seconds_per_item=0.1)
    assert max(high - low for low, high in slow) * 0.1 <= planning.TARGET_CHUNK_SECONDS


def test_a_million_small_items_run_as_few_tasks_and_come_back_in_order(cluster) -> None:
    _, bridge = cluster
    run = bridge.map(operator.neg, range(1_000_000), progress=False)
    assert len(run.futures) < 200  # a million tasks would cost ~2.5 ms each
    results = bridge.gather(run, progress=False)
    assert results == [-i for i in range(1_000_000)]
    assert executed(bridge, run.name) == 1_000_000
    assert run.name not in bridge.runs()  # gathered, so released


def test_broadcast_handles_and_stacking_give_one_contiguous_array(cluster) -> None:
    _, bridge = cluster
    row = bridge.broadcast(np.arange(4.0))
    run = bridge.map(row_times, np.arange(3000), args=(row,), stack=True, progress=False)
    stacked = bridge.gather(run, stack=True, progress=False)
    assert stacked.shape == (3000, 4) and stacked.flags.c_contiguous
    np.testing.assert_array_equal(stacked, np.outer(np.arange(3000), np.arange(4.0)))
    unstacked_on_workers = bridge.gather(bridge.map(row_times, range(5), args=(row,), progress=False),
                                         stack=True, progress=False)
    np.testing.assert_array_equal(unstacked_on_workers, np.outer(np.arange(5), np.arange(4.0)))
    bridge.release(row)


def test_progress_lines_and_the_dashboard_link_when_not_on_a_terminal(cluster, capsys) -> None:
    _, bridge = cluster
    bridge.dashboard_shown = False  # as a new bridge: earlier tests may have mapped with progress
    bridge.gather(bridge.map(operator.neg, range(50_000)))
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"hpcbridge: dashboard {bridge.dashboard_link}"
    assert err[-1].startswith("run-") and ": 100% (50000/50000 items, " in err[-1]
    assert "\r" not in "".join(err)
    bridge.gather(bridge.map(operator.neg, range(10)))
    again = capsys.readouterr().err
    assert "dashboard" not in again and ": 100% (10/10 items, " in again  # the link is said once per bridge


def test_a_failing_item_comes_back_with_its_index_value_and_remote_traceback(cluster) -> None:
    _, bridge = cluster
    run = bridge.map(fragile_square, range(40), progress=False)
    with pytest.raises(ItemError) as failed:
        bridge.gather(run, progress=False)
    assert failed.value.index == 13 and failed.value.item == "13"
    assert failed.value.worker.startswith("tls://")  # TLS, the default
    assert "ValueError: thirteen is unlucky" in str(failed.value)
    assert f'File "{__file__}", line 35, in fragile_square' in failed.value.remote_traceback  # the user's file
    assert run.name in bridge.runs()  # kept for another try
    bridge.release(run)
    assert run.name not in bridge.runs()


def test_a_run_named_twice_is_refused_and_a_timeout_leaves_the_run_on_the_cluster(cluster) -> None:
    _, bridge = cluster
    run = bridge.map("time:sleep", [0.5] * 8, name="sleepy", chunk_size=1, progress=False)
    with pytest.raises(KeyError, match="'sleepy' already exists"):
        bridge.map(operator.neg, [1], name="sleepy", progress=False)
    with pytest.raises(TimeoutError, match=r"results\('sleepy'\)"):
        bridge.gather(run, timeout=0.2, progress=False)
    assert "sleepy" in bridge.runs()
    assert bridge.results("sleepy", progress=False) == [None] * 8
    assert "sleepy" not in bridge.runs()


CLIENT = textwrap.dedent("""
    import sys
    from hpcbridge import connect
    bridge = connect(sys.argv[1], n_workers=2, timeout=30)
    run = bridge.map(sys.argv[2] + ":slow_square", range(200), name="survivor", progress=False)
    print(run.name, flush=True)
    sys.stdin.read()  # wait to be killed
""")

USER_FUNCTIONS = textwrap.dedent("""
    import time

    def slow_square(x):
        time.sleep(0.02)
        return x * x
""")


def test_results_survive_a_killed_client_and_are_collected_without_recomputing(cluster, tmp_path: Path) -> None:
    job, bridge = cluster
    (tmp_path / "client.py").write_text(CLIENT)
    (tmp_path / "user_functions.py").write_text(USER_FUNCTIONS)  # a file only this machine has
    client = subprocess.Popen([sys.executable, str(tmp_path / "client.py"), job.scheduler_file,
                               str(tmp_path / "user_functions.py")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "survivor"
        assert bridge.run("survivor").done_items() < 200  # still running when the client dies
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    with connect(job.scheduler_file, n_workers=2, timeout=30) as again:
        assert "survivor" in again.runs()
        assert again.results("survivor", timeout=120, progress=False) == [x * x for x in range(200)]
        assert "survivor" not in again.runs()
    assert executed(bridge, "survivor") == 200  # every item ran exactly once


def test_a_slow_first_call_on_cold_workers_still_gets_chunks_sized_for_cheap_items(cluster) -> None:
    _, bridge = cluster
    cold = functools.partial(slow_first_call, token=f"hpcbridge_cold_{uuid.uuid4().hex}")
    run = bridge.map(cold, range(20_000), progress=False)
    assert bridge.gather(run, progress=False) == list(range(20_000))
    assert len(run.futures) < 200  # not one task per item


def test_a_function_mapped_before_is_planned_from_what_its_last_run_measured(cluster) -> None:
    """The warm-up (two items per thread, waited for) is left out when this client has collected a
    run of the same function over items of the same type; the next run learns from the last."""
    _, bridge = cluster
    first = bridge.map(pause, [0.0] * 4000, progress=False)
    assert first.bounds[:2] == [(0, 2), (2, 4)]  # warm-ups
    assert bridge.gather(first, progress=False) == [0.0] * 4000
    again = bridge.map(pause, [0.0] * 4000, progress=False)
    assert again.bounds == [(0, 2000), (2000, 4000)]  # tiny items, as measured: one chunk per thread
    assert bridge.gather(again, progress=False) == [0.0] * 4000
    assert executed(bridge, first.name) == executed(bridge, again.name) == 4000
    other_type = bridge.map(pause, [0] * 10, progress=False)  # ints, not floats: warmed up again
    assert other_type.bounds[:2] == [(0, 2), (2, 4)]
    bridge.gather(other_type, progress=False)
    slower = bridge.map(pause, [0.01] * 400, progress=False)  # planned from the tiny items' figure
    assert len(slower.bounds) == 2
    bridge.gather(slower, progress=False)
    learned = bridge.map(pause, [0.01] * 400, progress=False)  # 4 s of work as the last run measured
    assert len(learned.bounds) >= 16
    assert max(high - low for low, high in learned.bounds) * 0.01 <= planning.TARGET_CHUNK_SECONDS * 1.5
    assert bridge.gather(learned, progress=False) == [0.01] * 400
    assert executed(bridge, slower.name) == executed(bridge, learned.name) == 400


def test_a_warm_up_of_a_few_items_with_slow_first_calls_does_not_plan_the_next_map(cluster) -> None:
    """A benchmark or script that first maps a few items to import its libraries on every worker
    (3 s each here) must not make the real map one task per item: the remembered figure leaves
    out first calls, and a run of a few items is not remembered at all."""
    _, bridge = cluster
    cold = functools.partial(slow_first_call, token=f"hpcbridge_cold_{uuid.uuid4().hex}")
    assert bridge.gather(bridge.map(cold, range(4), progress=False), progress=False) == [0, 1, 2, 3]
    key = planning.estimate_key(function_identity(cold), range(4))
    assert planning.remembered_estimate(bridge.client, key) is None  # 4 items: a warm-up, no sample
    real = bridge.map(cold, range(2000), progress=False)
    assert real.bounds[:2] == [(0, 2), (2, 4)]  # probed afresh
    assert bridge.gather(real, progress=False) == list(range(2000))
    assert len(real.futures) < 50
    assert planning.remembered_estimate(bridge.client, key) < 0.01  # the 3 s first calls are not in it
    again = bridge.map(cold, range(2000), progress=False)
    assert len(again.futures) <= 4 and again.bounds[0] != (0, 2)  # planned from the last run
    assert bridge.gather(again, progress=False) == list(range(2000))
    assert executed(bridge, real.name) == executed(bridge, again.name) == 2000


def test_results_come_straight_from_the_workers_unless_the_client_cannot_reach_them(cluster, monkeypatch) -> None:
    """Gathering through the scheduler sends every byte over two connections; a client that reaches
    the workers gathers from them, one that reaches the scheduler only (a tunnel to its port)
    keeps the scheduler's route, decided within a bound and once per client."""
    job, bridge = cluster
    assert futures.reaches_workers(bridge.client) is True
    with connect(job=job, n_workers=2, timeout=60) as other:
        with socket.socket() as closed:  # a port nobody listens on: what a firewalled worker looks like
            closed.bind(("127.0.0.1", 0))
            address = f"tls://127.0.0.1:{closed.getsockname()[1]}"
        real_info = other.client.scheduler_info
        monkeypatch.setattr(other.client, "scheduler_info", lambda **kw: {**real_info(**kw), "workers": {address: {}}})
        started = time.monotonic()
        assert futures.reaches_workers(other.client) is False
        assert time.monotonic() - started < futures.DIRECT_PROBE_SECONDS + 1
        monkeypatch.undo()
        routes: list = []
        real_gather = other.client.gather
        monkeypatch.setattr(other.client, "gather", lambda futures, **kw: routes.append(kw.get("direct")) or
                            real_gather(futures, **kw))
        assert other.gather(other.map(operator.neg, range(50), progress=False), progress=False) == [-x for x in range(50)]
        assert routes and set(routes) == {False}  # decided once: through the scheduler (probe and results)
    routes.clear()
    own_gather = bridge.client.gather
    monkeypatch.setattr(bridge.client, "gather", lambda futures, **kw: routes.append(kw.get("direct")) or
                        own_gather(futures, **kw))
    assert bridge.gather(bridge.map(operator.neg, range(50), progress=False), progress=False) == [-x for x in range(50)]
    assert routes and set(routes) == {True}
