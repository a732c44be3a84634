"""Eight client processes mapping 100,000 items each on one local cluster at once: every result right,
every item run once, and neither the scheduler nor the workers keep memory or tasks afterwards."""

from __future__ import annotations

import operator
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hpcbridge.client.bridge import Bridge, connect
from hpcbridge.cluster import chunks
from hpcbridge.job import submit as jobs
from tests.conftest import module_bridge
from tests.scheduler_probes import peak_rss_bytes, task_and_client_counts

CLIENTS = 8
ITEMS = 100_000
BOUND_SECONDS = 240  # all eight together, on a loaded 2-core machine: ~20 s here

CLIENT = """
import operator, sys
from hpcbridge.client.bridge import connect

name = sys.argv[2]
with connect(sys.argv[1], n_workers=2, timeout=60) as bridge:
    run = bridge.map(operator.neg, range({items}), name=name, progress=False)
    values = bridge.gather(run, progress=False, timeout=180)
assert values == [-x for x in range({items})], name
print("ok", name, len(values), flush=True)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[jobs.SubmittedJob, Bridge]]:
    with module_bridge(tmp_path_factory, 2) as attached:
        yield attached


def test_eight_clients_at_once_each_get_every_result_once_with_flat_memory(cluster, tmp_path: Path) -> None:
    job, bridge = cluster
    script = tmp_path / "client.py"
    script.write_text(CLIENT.format(items=ITEMS))
    scheduler_before = bridge.client.run_on_scheduler(peak_rss_bytes)
    workers_before = bridge.client.run(peak_rss_bytes)
    names = [f"client-{i}" for i in range(CLIENTS)]
    clients = [subprocess.Popen([sys.executable, str(script), job.scheduler_file, name], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for name in names]
    started = time.monotonic()
    try:
        outputs = [client.communicate(timeout=max(1.0, BOUND_SECONDS - (time.monotonic() - started)))
                   for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.communicate()
    print(f"\nfigures many clients: {CLIENTS} x {ITEMS} items in {time.monotonic() - started:.1f} s")
    for name, client, (out, err) in zip(names, clients, outputs):
        assert client.returncode == 0 and out.split() == ["ok", name, str(ITEMS)], err[-2000:]
    executed = bridge.client.run(chunks.executed_items).values()
    assert [sum(counts.get(name, 0) for counts in executed) for name in names] == [ITEMS] * CLIENTS
    assert bridge.runs() == []
    tasks, _ = bridge.client.run_on_scheduler(task_and_client_counts)
    assert tasks == 0  # every client released its run: nothing is kept on the cluster
    grown = bridge.client.run_on_scheduler(peak_rss_bytes) - scheduler_before
    worker_growth = max(peak_rss_bytes_after - workers_before[worker]
                        for worker, peak_rss_bytes_after in bridge.client.run(peak_rss_bytes).items())
    print(f"figures many clients: peak memory grew {grown / 2**20:.0f} MiB on the scheduler, "
          f"{worker_growth / 2**20:.0f} MiB on a worker at most")
    # Eight runs of 100,000 small results at once are ~30 MB of values in all: the scheduler holds
    # none of them (only chunk metadata), a worker at most its share.
    assert grown < 100 * 2**20 and worker_growth < 200 * 2**20
    assert bridge.run_root and not list(Path(bridge.run_root).glob("client-*"))  # gathered: folders deleted


class MeetingItems(list):
    """Items whose first slice (a run's first chunk, cut after its name was taken) waits for another
    run's, so that two ``map`` calls reach the cluster at the same moment: the race of two clients
    that chose one name."""

    def __init__(self, values: range, barrier: threading.Barrier) -> None:
        super().__init__(values)
        self.barrier = barrier

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice) and self.barrier is not None:
            barrier, self.barrier = self.barrier, None
            try:
                barrier.wait()
            except threading.BrokenBarrierError:  # the other run was refused before cutting a chunk
                pass
        return list.__getitem__(self, index)


def test_two_clients_starting_a_run_of_one_name_at_once_never_mix_their_results(cluster) -> None:
    job, bridge = cluster
    barrier = threading.Barrier(2, timeout=5)
    outcomes: dict[int, object] = {}

    def start(chunk_size: int, client_bridge: Bridge) -> None:
        items = MeetingItems(range(300), barrier)
        try:
            run = client_bridge.map(operator.neg, items, name="same", chunk_size=chunk_size, progress=False)
            outcomes[chunk_size] = client_bridge.gather(run, progress=False, timeout=120)
        except Exception as error:  # noqa: BLE001 - the loser's error is what is checked
            outcomes[chunk_size] = error

    with connect(job.scheduler_file, n_workers=2, timeout=60, set_as_default=False) as other:
        threads = [threading.Thread(target=start, args=(7, bridge)), threading.Thread(target=start, args=(13, other))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=180)
        assert not any(thread.is_alive() for thread in threads)
    errors = [outcome for outcome in outcomes.values() if isinstance(outcome, Exception)]
    values = [outcome for outcome in outcomes.values() if not isinstance(outcome, Exception)]
    assert len(errors) == 1 and len(values) == 1, outcomes
    assert values[0] == [-x for x in range(300)]  # the winner's own chunks, every one
    message = str(errors[0])
    assert isinstance(errors[0], KeyError) and "'same'" in message and "already exists" in message
    assert "Dataset same" not in message  # distributed's words came after both runs had submitted chunks
    executed = sum(counts.get("same", 0) for counts in bridge.client.run(chunks.executed_items).values())
    assert executed == 300  # the loser computed nothing
    assert bridge.runs() == []
