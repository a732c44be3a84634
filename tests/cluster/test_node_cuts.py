"""A node cut off the network during a map, on the harness's real Slurm (three namespace nodes).

A node is cut by setting the host side of its veth down (its processes keep running, as on a
node whose switch port fails), for less than Slurm's node-failure limit (SlurmdTimeout=60 s
here; cut longer, Slurm kills and requeues the whole job, see test_scheduler_files.py). The
link always comes back, and the node is resumed, in a ``finally``. Every item counts its
executions with a file of its own, so "returned once" and "ran twice only if in flight on the
cut node" are counted, not assumed.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import dask
import pytest

from hpcbridge.client.bridge import connect
from hpcbridge.client.losses import SchedulerLost, SchedulerUnreachable
from hpcbridge.job import submit as jobs
from tests.conftest import wait_for

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the helpers below run on the cluster

CUT_SECONDS = 35.0  # under SlurmdTimeout (60 s): Slurm keeps the job
# The scheduler's node cut off: distributed's TCP timeout (30 s) or hpcbridge's unanswered bound
# (watch.UNREACHABLE_SECONDS, 30 s), the reconnect try (10 s) and the batch system's word (10 s).
SCHEDULER_CUT_BOUND = 60.0
GATHER_TIMEOUT = 150.0  # the map completes within this of the cut, on the workers that remain
WORKER_CUT_BOUND = 150.0  # the map finishes on the other workers within this of the cut


def marked(item: int, marks: str, seconds: float) -> int:
    """Leave a file per execution (named for the item and the node), take ``seconds``, return ``3 * item``."""
    Path(marks, f"{item}-{socket.gethostname()}-{uuid.uuid4().hex[:8]}").touch()
    time.sleep(seconds)
    return 3 * item


def executions(marks: Path) -> collections.Counter:
    return collections.Counter(int(path.name.split("-")[0]) for path in marks.iterdir())


def ran_on(marks: Path, node: str) -> set[int]:
    return {int(path.name.split("-")[0]) for path in marks.iterdir() if path.name.split("-")[1] == node}


def job_nodes(cluster, job: jobs.SubmittedJob) -> tuple[str, list[str]]:
    """(the batch host, where the scheduler runs; every node of the job)."""
    record = dict(field.split("=", 1) for field in cluster.run("scontrol", "show", "job", "-o", job.job_id)
                  .stdout.split() if "=" in field)
    return record["BatchHost"], cluster.run("scontrol", "show", "hostnames", record["NodeList"]).stdout.split()


@contextlib.contextmanager
def cut_off(cluster, node: str, seconds: float = CUT_SECONDS) -> Iterator[float]:
    """Cut ``node`` off the network (its host-side veth down) for ``seconds``, while the body runs on.

    Yields when the cut began. A thread brings the link back after ``seconds`` (never later, so
    Slurm keeps the job); leaving the body waits for that, and on an error it restores the link at once.
    """
    veth = f"hpcb{cluster.netns[0].split('-')[1]}v{node.removeprefix('node')}"
    early = threading.Event()

    def restore() -> None:
        early.wait(seconds)
        subprocess.run(["ip", "link", "set", veth, "up"], check=True, timeout=30)

    subprocess.run(["ip", "link", "set", veth, "down"], check=True, timeout=30)
    restorer = threading.Thread(target=restore, name=f"restore-{veth}", daemon=True)
    restorer.start()
    try:
        yield time.monotonic()
    except BaseException:
        early.set()
        raise
    finally:
        restorer.join(timeout=seconds + 30)
        if restorer.is_alive():  # the thread's `ip` hung: try once more from here
            subprocess.run(["ip", "link", "set", veth, "up"], check=True, timeout=30)
        if "DOWN" in cluster.run("sinfo", "-h", "-n", node, "-o", "%T").stdout.upper():
            cluster.run("scontrol", "update", f"nodename={node}", "state=resume")


@pytest.mark.parametrize(("tcp_timeout", "n_items"), [(None, 300), ("12s", 600)],
                         ids=["client-reconnects", "client-gives-up"])
def test_the_schedulers_node_cut_off_loses_nothing_and_the_run_is_collected_after(
        submit_3nodes, slurm_cluster_3nodes, tmp_path: Path, tcp_timeout: str | None, n_items: int) -> None:
    """Scheduler's node cut off 35 s during a named map.

    Bound: gather returns, or raises SchedulerUnreachable naming the cut within
    SCHEDULER_CUT_BOUND s of the cut; then results(name) on the same bridge, once the link is
    back, gives every result. With distributed's TCP timeout (30 s) the client's connection
    breaks near the end of the cut and it reconnects when the link returns (the map completes);
    with a 12 s one (``distributed.comm.timeouts.tcp``) the client gives up during the cut, while
    items remain (600 items of 0.1 s: more than the scheduler's own node computes meanwhile).
    """
    cluster = slurm_cluster_3nodes
    marks = tmp_path / "marks"
    marks.mkdir()
    items = list(range(n_items))
    job = submit_3nodes(job_name="schedcut")
    patience = dask.config.set({"distributed.comm.timeouts.tcp": tcp_timeout}) if tcp_timeout else \
        contextlib.nullcontext()
    with patience, connect(job=job, n_workers=3, timeout=120) as bridge:
        batch_host, _ = job_nodes(cluster, job)
        run = bridge.map(marked, items, args=(str(marks), 0.1), name="cutsched", progress=False)
        assert wait_for(lambda: run.done_items() >= 60, timeout=120)
        lost: SchedulerLost | None = None
        with cut_off(cluster, batch_host) as cut_at:
            try:
                values = bridge.gather(run, progress=False, timeout=GATHER_TIMEOUT)
            except SchedulerLost as error:
                lost = error
            answered = time.monotonic() - cut_at
            print(f"\nfigures scheduler node cut: {answered:.1f} s after the cut: {lost or 'gather returned'}")
            assert lost is None or answered < SCHEDULER_CUT_BOUND
        if lost is None:
            assert tcp_timeout is None, "a client that gives up after 12 s + 10 s returned during a 35 s cut"
            assert values == [3 * i for i in items]
        else:
            assert isinstance(lost, SchedulerUnreachable), lost
            assert f"cannot be reached while job {job.job_id} is still RUNNING (its node is cut off" in str(lost)
            assert "once the scheduler answers again (the network to its node is back, its process runs again), results('cutsched')" \
                in str(lost)
            # Every chunk a worker finished is saved before it is returned; workers go on saving meanwhile.
            assert lost.saved >= lost.done >= 60 and lost.n_missing == n_items - lost.done
            assert all(lost.results[i] == 3 * i for i in items if i not in set(lost.missing_items()))
            back = time.monotonic()
            values = bridge.results("cutsched", progress=False, timeout=120)
            print(f"figures scheduler node cut: results() {time.monotonic() - back:.1f} s after the link came back")
            assert values == [3 * i for i in items]
        counted = executions(marks)
        print(f"figures scheduler node cut: {sum(counted.values())} executions, "
              f"{sum(1 for n in counted.values() if n > 1)} items ran twice")
        assert set(counted) == set(items)
        started = time.monotonic()
        assert bridge.runs() == []  # the next call does not block
        assert time.monotonic() - started < 5
        bridge.shutdown()


def test_a_workers_node_cut_off_the_map_completes_on_the_others(submit_3nodes, slurm_cluster_3nodes,
                                                                   tmp_path: Path) -> None:
    """A worker's node (not the scheduler's) cut off 35 s: the scheduler drops its worker after
    ~30 s and the map completes on the others within WORKER_CUT_BOUND s of the cut, every result
    right, returned once; an item runs twice only if its chunk was in flight on the cut worker."""
    cluster = slurm_cluster_3nodes
    marks = tmp_path / "marks"
    marks.mkdir()
    items = list(range(300))
    job = submit_3nodes(job_name="workercut")
    with connect(job=job, n_workers=3, timeout=120) as bridge:
        batch_host, nodes = job_nodes(cluster, job)
        victim = next(node for node in nodes if node != batch_host)
        run = bridge.map(marked, items, args=(str(marks), 0.15), name="cutworker", progress=False)
        assert wait_for(lambda: run.done_items() >= 60, timeout=120)
        with cut_off(cluster, victim) as cut_at:
            values = bridge.gather(run, progress=False, timeout=WORKER_CUT_BOUND)
            finished = time.monotonic() - cut_at
            print(f"\nfigures worker node cut: the map completed {finished:.1f} s after the cut, "
                  f"{bridge.n_workers} workers left")
        assert values == [3 * i for i in items]
        counted = executions(marks)
        twice = sorted(item for item, n in counted.items() if n > 1)
        print(f"figures worker node cut: {len(twice)} items ran twice: {twice}")
        assert set(counted) == set(items) and max(counted.values()) <= 2
        assert set(twice) <= ran_on(marks, victim), "an item ran twice that was never on the cut node"
        bridge.shutdown()
