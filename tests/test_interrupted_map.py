"""Ctrl-C while ``map`` submits leaves nothing behind: no run folder that map made, no task of the run on
the scheduler or a worker once map has raised, and the run's name free again.

The interrupt is a real SIGINT to the main thread (what Ctrl-C sends), landing while the map
probes its warm-up chunks, or inside distributed's ``client.map`` while it pickles the chunks. The items wait at a gate (a
file) that a helper thread opens only once the run's tasks are cancelled, so which chunks had
started when the interrupt landed is known, and counting executions (``chunks.executed_items``)
shows that nothing else ran.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cloudpickle
import pytest

from hpcbridge.client.bridge import Bridge
from hpcbridge.cluster import chunks
from hpcbridge.job import submit as jobs
from tests.conftest import module_bridge, wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below run on the cluster

GATE_SECONDS = 120  # an item never waits longer than this at its gate (if a test fails)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    """A 2-worker local job (one thread each) shared by this module's tests."""
    with module_bridge(tmp_path_factory, 2) as attached:
        yield attached


@pytest.fixture(autouse=True)
def python_ctrl_c() -> Iterator[None]:
    """Ctrl-C as a Python program gets it (KeyboardInterrupt). Importing dask_jobqueue (other test files in
    this process do) replaces the handler with one that calls sys.exit()."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def at_gate(x: int, started: str, gate: str) -> int:
    """Says that item ``x`` started (a file in ``started``), then waits until ``gate`` exists."""
    Path(started, str(x)).touch()
    deadline = time.monotonic() + GATE_SECONDS
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return x


def executed(bridge: Bridge, run: str) -> int:
    """How many items of ``run`` the workers executed, all workers together."""
    return sum(counts.get(run, 0) for counts in bridge.client.run(chunks.executed_items).values())


def _keys_on_scheduler(prefix: str, dask_scheduler=None) -> list[str]:
    return [str(key) for key in dask_scheduler.tasks if str(key).startswith(prefix)]


def _keys_on_worker(prefix: str, dask_worker=None) -> dict[str, str]:
    """The worker's tasks of the run, with their states ("cancelled": still running, its result to be dropped)."""
    return {str(key): task.state for key, task in dask_worker.state.tasks.items() if str(key).startswith(prefix)}


def held_anywhere(bridge: Bridge, name: str) -> list[str]:
    """Keys of run ``name``'s tasks that the scheduler or a worker still holds (queued, running, cancelled)."""
    on_workers = bridge.client.run(_keys_on_worker, f"{name}-")
    return bridge.client.run_on_scheduler(_keys_on_scheduler, f"{name}-") + [
        key for keys in on_workers.values() for key in keys]


def only_running_leftovers(bridge: Bridge, name: str) -> bool:
    """True once the run's tasks are cancelled: the scheduler forgot them, and workers hold only those
    still running (which Dask cannot stop: they end at the gate)."""
    if bridge.client.run_on_scheduler(_keys_on_scheduler, f"{name}-"):
        return False
    states = [state for keys in bridge.client.run(_keys_on_worker, f"{name}-").values() for state in keys.values()]
    return all(state == "cancelled" for state in states)


def in_a_thread(action: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def press_ctrl_c() -> None:
    """What Ctrl-C does: SIGINT to the process, handled in the main thread (KeyboardInterrupt)."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def test_ctrl_c_while_map_probes_its_warm_up_chunks_leaves_nothing(cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    started, gate, name = tmp_path / "started", tmp_path / "gate", "interrupted-probing"
    started.mkdir()

    def helper() -> None:
        # Both warm-up chunks (2 items each, one per worker thread) run their first item: map waits
        # for them to measure the items. Ctrl-C now; open the gate once the run is cancelled.
        if wait_for(lambda: len(os.listdir(started)) == 2, GATE_SECONDS, 0.02):
            press_ctrl_c()
            wait_for(lambda: only_running_leftovers(bridge, name), GATE_SECONDS, 0.05)
        gate.touch()

    thread = in_a_thread(helper)
    try:
        with pytest.raises(KeyboardInterrupt):
            bridge.map(at_gate, range(40), args=(str(started), str(gate)), name=name, progress=False)
    finally:
        thread.join(GATE_SECONDS)
        gate.touch()
    assert not os.path.exists(os.path.join(bridge.run_root, name))  # no manifest, no warm-up chunk
    assert held_anywhere(bridge, name) == []  # nothing queued, nothing running any more
    assert executed(bridge, name) == 4 == len(os.listdir(started))  # the two warm-ups that had started, no more
    assert name not in bridge.runs()
    assert bridge.gather(bridge.map(abs, [-1, -2], name=name, progress=False), progress=False) == [1, 2]
    assert executed(bridge, name) == 4 + 2


INTERRUPTED = threading.Event()


class PressesCtrlCWhenSent:
    """An item that presses Ctrl-C when distributed pickles it to send it (inside ``client.map``)."""

    def __reduce__(self) -> tuple[type, tuple]:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_name != "_graph_to_futures":
            frame = frame.f_back
        if frame is not None and not INTERRUPTED.is_set():
            INTERRUPTED.set()
            signal.raise_signal(signal.SIGINT)  # handled at the next instruction: KeyboardInterrupt here
        return (PressesCtrlCWhenSent, ())


def waits_if_listed(x: int, listed: tuple, started: str, gate: str) -> int:
    """Says that item ``x`` started; an item in ``listed`` then waits at the gate."""
    return at_gate(x, started, gate) if x in listed else Path(started, str(x)).touch() or x


def test_ctrl_c_inside_distributeds_submit_cancels_the_chunks_sent_before_and_leaves_nothing(
        cluster, tmp_path: Path) -> None:
    _, bridge = cluster
    started, gate, name = tmp_path / "started", tmp_path / "gate", "interrupted-submitting"
    started.mkdir()
    items: list = list(range(40))
    items[25] = PressesCtrlCWhenSent()
    # The warm-ups are items 0-1 (quick: they give the estimate) and 2-3 (item 2 waits at the gate);
    # then the rest goes as one graph, and Ctrl-C lands while distributed pickles it: the second
    # warm-up is running, the graph has not left.

    def helper() -> None:
        wait_for(lambda: INTERRUPTED.is_set() and only_running_leftovers(bridge, name), GATE_SECONDS, 0.05)
        gate.touch()

    thread = in_a_thread(helper)
    try:
        with pytest.raises(KeyboardInterrupt):
            bridge.map(waits_if_listed, items, args=((2,), str(started), str(gate)), name=name, progress=False)
    finally:
        thread.join(GATE_SECONDS)
        gate.touch()
    assert INTERRUPTED.is_set()
    assert not os.path.exists(os.path.join(bridge.run_root, name))
    assert held_anywhere(bridge, name) == [], bridge.client.run(_keys_on_worker, f"{name}-")
    assert executed(bridge, name) == 4 == len(os.listdir(started))  # the two warm-ups, nothing of the graph
    assert name not in bridge.runs()
    assert bridge.gather(bridge.map(abs, [-3], name=name, progress=False), progress=False) == [3]
    assert executed(bridge, name) == 4 + 1
