"""Broadcast on a real local cluster: sent once, never through the scheduler, kept past the AMM."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import numpy as np
import pytest

from hpcbridge.client.bridge import Bridge
from hpcbridge.cluster import broadcasts as broadcast
from hpcbridge.cluster import machine_copy
from hpcbridge.job import submit as jobs
from tests.conftest import module_bridge, worker_tls_env
from tests.scheduler_probes import amm_interval, peak_rss_bytes

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below run on the cluster

MB = 2**20


def total(values: np.ndarray, weights: np.ndarray) -> float:
    return float(values.sum() * weights[0])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    """A 3-worker local job shared by this module's tests."""
    with module_bridge(tmp_path_factory, 3) as attached:
        yield attached


def test_broadcast_is_sent_once_copied_by_workers_and_survives_the_memory_manager(cluster) -> None:
    job, bridge = cluster
    interval = bridge.client.run_on_scheduler(amm_interval)
    assert interval is not None, "the Active Memory Manager must be running for this test to mean anything"
    scheduler_peak = bridge.client.run_on_scheduler(peak_rss_bytes)
    data = np.random.default_rng(1).random(25_000_000)  # 200 MB

    handle = bridge.broadcast(data, shared=False)  # every worker its own copy (shared: the test below)

    assert data.nbytes <= handle.nbytes < data.nbytes + 4096  # left the client once, not once per worker
    assert handle.n_workers == 3
    assert handle.name in bridge.broadcasts()
    time.sleep(2 * interval + 1)
    items = [np.full(10, float(i)) for i in range(12)]
    results = bridge.gather(bridge.map(total, items, args=handle, progress=False))
    assert results == [total(item, data) for item in items]
    stats = bridge.client.run(broadcast.worker_stats)
    copies = [per_worker[handle.name] for per_worker in stats.values()]
    assert all(copy["held"] for copy in copies)
    assert sorted(copy["source"] == "client" for copy in copies) == [False, False, True]
    assert sorted(copy["fetches"] for copy in copies) == [0, 1, 1]  # nobody fetched it again
    peers = {copy["source"] for copy in copies} - {"client"}
    assert peers <= set(stats)
    assert not [key for key in bridge.client.who_has() if handle.name in str(key)]
    grown = bridge.client.run_on_scheduler(peak_rss_bytes) - scheduler_peak
    assert grown < 40 * MB, f"the scheduler's peak memory grew by {grown / MB:.0f} MB"
    np.testing.assert_array_equal(bridge.client.submit(broadcast.value, handle.name, pure=False).result(), data)
    bridge.release(handle)


def describe_broadcast(name: str) -> tuple[bool, str]:
    values = broadcast.value(name)
    return bool(values.flags.writeable), hashlib.sha256(values).hexdigest()


def sources_open() -> list[str]:
    """The private broadcasts whose machine copy this worker still holds open (test only: module state)."""
    return sorted(broadcast._SOURCES)


@pytest.mark.parametrize("case", ["client on the machine", "client elsewhere", "not shared",
                                  "not shared, client elsewhere"])
def test_workers_on_one_machine_map_one_shared_read_only_copy(cluster, case: str, monkeypatch) -> None:
    """Shared (the default): one copy per machine, mapped read-only by its workers; written by the
    client itself when it is on that machine, else sent to one worker over the network. Not
    shared: every worker its own writable copy, taken from one machine copy the same way (no TLS
    stream per worker), which is closed once they all hold theirs."""
    _, bridge = cluster
    if case.endswith("client elsewhere"):  # as a login node's client sees it: no worker shares its machine
        monkeypatch.setattr(machine_copy, "machine", lambda: "another-boot/1")
    data = np.random.default_rng(2).random(5_000_000)
    handle = bridge.broadcast(data, shared=not case.startswith("not shared"))
    copies = {address: stats[handle.name] for address, stats in bridge.client.run(broadcast.worker_stats).items()}
    first = [copy for copy in copies.values() if copy["source"] == "client"]
    others = [copy for copy in copies.values() if copy["source"] != "client"]
    assert len(first) == 1 and len(others) == 2 and all(copy["source"] in copies for copy in others), copies
    expected = {"client on the machine": ("shared memory", "shared memory"), "client elsewhere": ("network", "shared memory"),
                "not shared": ("shared memory", "shared memory"),
                "not shared, client elsewhere": ("network", "shared memory")}[case]
    assert (handle.via, first[0]["via"]) == (expected[0], expected[0])
    assert {copy["via"] for copy in others} == {expected[1]}
    assert data.nbytes <= handle.nbytes < data.nbytes + 4096  # left the client once
    seen = set(bridge.client.run(describe_broadcast, handle.name).values())  # what tasks get, per worker
    assert seen == {(case.startswith("not shared"), hashlib.sha256(data).hexdigest())}
    assert set(map(tuple, bridge.client.run(sources_open).values())) == {()}
    bridge.release(handle)


def scale_in_place(name: str, factor: float) -> float:
    values = broadcast.value(name)
    values *= factor
    return float(values[1])


def test_private_copies_on_one_machine_stay_private(cluster) -> None:
    """shared=False on one machine: each worker's copy is its own, taken from one machine copy, so a
    task that changes it in place changes no other worker's."""
    _, bridge = cluster
    data = np.arange(1_000_000, dtype=np.float64)
    handle = bridge.broadcast(data, shared=False)
    workers = list(bridge.client.scheduler_info(n_workers=-1)["workers"])
    changed = bridge.client.run(scale_in_place, handle.name, 3.0, workers=workers[:1])
    others = bridge.client.run(scale_in_place, handle.name, 1.0, workers=workers[1:])
    assert list(changed.values()) == [3.0] and list(others.values()) == [1.0, 1.0]
    bridge.release(handle)


def say_machine(name: str) -> None:
    """Test only: this worker process says it runs on machine ``name`` (empty: its real one)."""
    real = vars(machine_copy).setdefault("_real_machine", machine_copy.machine)
    machine_copy.machine = (lambda: name) if name else real


def own_machine(on: bool) -> None:
    """Test only: this worker process says it is a machine of its own (as on nodes with one worker each)."""
    say_machine(f"emulated-{os.getpid()}" if on else "")


def test_a_worker_that_joins_later_copies_the_broadcast_from_a_peer(cluster) -> None:
    job, bridge = cluster
    data = np.arange(2_000_000, dtype=np.int64)
    handle = bridge.broadcast(data)
    before = set(bridge.client.scheduler_info(n_workers=-1)["workers"])
    late = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                             job.scheduler_file, "--nthreads", "1", "--no-dashboard", "--death-timeout", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, **worker_tls_env(job.scheduler_file)})
    try:
        bridge.wait_for_workers(4, timeout=60)
        (newcomer,) = set(bridge.client.scheduler_info(n_workers=-1)["workers"]) - before
        copy = bridge.client.run(broadcast.worker_stats, workers=[newcomer])[newcomer][handle.name]
        assert copy["held"] and copy["fetches"] == 1
        assert copy["source"] in before
        value = bridge.client.submit(broadcast.value, handle.name, workers=[newcomer], pure=False).result()
        np.testing.assert_array_equal(value, data)
    finally:
        bridge.client.retire_workers([w for w in bridge.client.scheduler_info(n_workers=-1)["workers"]
                                      if w not in before], close_workers=True)
        late.terminate()
        late.wait(timeout=30)
    bridge.release(handle)


def test_release_drops_every_copy_and_later_tasks_say_it_is_gone(cluster) -> None:
    _, bridge = cluster
    handle = bridge.broadcast({"weights": [1.0, 2.0]})
    assert bridge.gather(bridge.map(lambda_free_lookup, ["weights"], args=handle, progress=False)) == [[1.0, 2.0]]
    bridge.release(handle)
    assert handle.name not in bridge.broadcasts()
    assert all(handle.name not in held for held in bridge.client.run(broadcast.worker_stats).values())
    future = bridge.client.submit(broadcast.value, handle.name, pure=False)
    with pytest.raises(KeyError, match="no broadcast named"):
        future.result()
    with pytest.warns(UserWarning, match="is not on this cluster"):
        assert bridge.release(handle.name) is False  # released before: said, not an error


def lambda_free_lookup(key: str, table: dict) -> list[float]:
    return table[key]


def test_a_broadcast_outlives_the_client_that_sent_it_and_is_used_by_name(cluster, tmp_path: Path) -> None:
    job, bridge = cluster
    script = tmp_path / "send.py"
    script.write_text(
        "import sys, numpy as np\n"
        "from hpcbridge import connect\n"
        "with connect(sys.argv[1], n_workers=3, timeout=30) as bridge:\n"
        "    handle = bridge.broadcast(np.ones(1_250_000), name='shared-ones')\n"
        "    print(handle.nbytes)\n")
    done = subprocess.run([sys.executable, str(script), job.scheduler_file],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 10_000_000 <= int(done.stdout) < 10_004_096  # the array and a pickle's header
    assert "shared-ones" in bridge.broadcasts()
    results = bridge.gather(bridge.map(total, [np.ones(3)], args=broadcast.Broadcast.named("shared-ones"),
                                       progress=False))
    assert results == [3.0]
    bridge.release("shared-ones")


def test_a_broadcast_name_in_use_is_refused_at_once_and_the_first_copy_stays_usable(cluster) -> None:
    _, bridge = cluster
    first = bridge.broadcast(np.array([2.0]), name="dup-python")
    try:
        with pytest.raises(ValueError, match="a broadcast named 'dup-python' already exists"):
            bridge.broadcast(np.array([3.0]), name="dup-python")
        items = [np.ones(4)] * 6
        assert bridge.gather(bridge.map(total, items, args=first, progress=False), progress=False) == [8.0] * 6
    finally:
        bridge.release(first)
    again = bridge.broadcast(np.array([5.0]), name="dup-python")  # free again once released
    assert bridge.gather(bridge.map(total, [np.ones(2)], args=again, progress=False), progress=False) == [10.0]
    bridge.release(again)


def test_private_copies_spread_as_a_tree_each_worker_asks_its_parent_once(cluster) -> None:
    """shared=False, every worker on a machine of its own (emulated: each says so): the worker the
    client sent the copy to sends it on, one copy at a time; every other worker asks only its parent
    in the plan (nobody polls peers that do not hold it yet)."""
    _, bridge = cluster
    data = np.arange(4_000_000, dtype=np.float64)  # 32 MB: each copy takes long enough to overlap
    bridge.client.run(own_machine, True)
    try:
        handle = bridge.broadcast(data, shared=False)
    finally:
        bridge.client.run(own_machine, False)
    copies = {worker: stats[handle.name] for worker, stats in bridge.client.run(broadcast.worker_stats).items()}
    (root,) = [worker for worker, copy in copies.items() if copy["source"] == "client"]
    others = set(copies) - {root}
    for worker in others:  # three workers: the plan's ranks 1 and 2 both ask rank 0
        assert (copies[worker]["source"], copies[worker]["asked"], copies[worker]["fetches"]) == (root, 1, 1), copies
    assert copies[root]["sent"] == len(others) and copies[root]["most_at_once"] == 1, copies
    np.testing.assert_array_equal(bridge.client.submit(broadcast.value, handle.name, pure=False).result(), data)
    bridge.release(handle)


def test_a_shared_broadcast_crosses_the_network_once_per_machine_and_the_others_map_that_copy(cluster) -> None:
    """Two machines (emulated: one worker says it is machine A, the two others machine B), the default shared
    broadcast, three times: one copy crosses to the other machine (besides the client's), and the worker
    left maps its machine's copy, asking only its planned parent. Without a plan it asked peers at random
    and often took its copy over the network before its neighbour held one (25 of 32 workers over the
    Slurm harness's 4 nodes)."""
    _, bridge = cluster
    client = bridge.client
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    for worker, machine in zip(workers, ["emulated-A", "emulated-B", "emulated-B"]):
        client.run(say_machine, machine, workers=[worker])
    try:
        for _ in range(3):
            handle = bridge.broadcast(np.arange(2_000_000, dtype=np.float64))
            copies = {worker: stats[handle.name] for worker, stats in client.run(broadcast.worker_stats).items()}
            via = sorted((copy["source"] == "client", copy["via"]) for copy in copies.values())
            assert via == [(False, "network"), (False, "shared memory"), (True, "network")], copies
            assert all(copy["asked"] == 1 for copy in copies.values() if copy["source"] != "client"), copies
            bridge.release(handle)
    finally:
        client.run(say_machine, "")


def set_parent_wait(seconds: float) -> None:
    broadcast.PARENT_WAIT = seconds


def test_a_worker_whose_parent_never_gets_the_copy_asks_the_others(cluster) -> None:
    """A plan whose parents cannot serve (here two workers each other's parent: neither ever holds
    it first) costs a bounded wait, then the copy comes from a peer that holds it."""
    from hpcbridge.client import broadcast as sending

    _, bridge = cluster
    client = bridge.client
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    data = np.arange(1_000_000, dtype=np.int64)
    name = "cycle-plan"
    client.run(set_parent_wait, 1.0)
    try:
        client.register_plugin(broadcast.BroadcastService())
        _, _, first = sending._put(client, workers, name, data, shared=False,
                                   machines=client.run(machine_copy.machine))
        b, c = [worker for worker in workers if worker != first]
        replies = client.register_plugin(broadcast.BroadcastCopy(name, False, {b: (c, 1), c: (b, 2)}),
                                         name=broadcast.PLUGIN_PREFIX + name)
        assert {reply["status"] for reply in replies.values()} == {"OK"}, replies
        copies = {worker: stats[name] for worker, stats in client.run(broadcast.worker_stats).items()}
        assert copies[first]["source"] == "client"
        # The first to give up on its parent asks the others; the other one may then be served by its
        # parent (which holds the copy by then) before its own wait ends.
        assert max(copies[b]["asked"], copies[c]["asked"]) >= 2, copies
        for worker, parent in ((b, c), (c, b)):
            assert copies[worker]["held"], copies
            assert copies[worker]["asked"] >= 2 or copies[worker]["source"] == parent, copies
        for worker in workers:
            np.testing.assert_array_equal(client.submit(broadcast.value, name, workers=[worker], pure=False).result(), data)
    finally:
        client.run(set_parent_wait, broadcast.PARENT_WAIT)
        bridge.release(broadcast.Broadcast.named(name))
