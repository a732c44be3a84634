"""hpcbridge's broadcast against ``client.scatter(..., broadcast=True)``, on a local cluster.

For each method: seconds until every worker holds the object, bytes that left the client, how
much the scheduler's peak memory grew, and how many workers still hold a copy after waiting
past the Active Memory Manager's interval. hpcbridge runs three times: shared (the default: the
workers of one machine map one read-only copy; here the client shares the workers' machine, so
it writes that copy itself and nothing crosses the network, as for a client inside the
allocation), private (``shared=False``: every worker its own copy, here all taken from one
machine copy, as for many workers per node) and private over the network (``_network``: every
worker says it is a machine of its own, *emulated* in each worker process, so every copy goes
worker to worker through the comm, as on nodes with one worker each and a client on a login
node). Beside them, the loopback limit: the
object's bytes times the copies a private broadcast makes (one per worker), over the
single-stream bandwidth of a plain TCP socket on 127.0.0.1 measured in the same run, and the
same limit through the cluster's own comm (TLS, received into fresh memory as a broadcast's copy
is): the copies times the best of three single worker-to-worker copies, one at a time, while
nothing else is sent. Prints ``name: value`` lines.

    .venv/bin/python benchmarks/broadcast.py --megabytes 400 --workers 4
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import threading
import time

import numpy as np
from distributed.comm import get_address_host

from hpcbridge.cluster import broadcasts as broadcast
from hpcbridge.local_cluster import local_cluster


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def amm_interval(dask_scheduler) -> float:
    amm = dask_scheduler.extensions.get("amm")
    return amm.interval if amm is not None and amm.running else 0.0


def loopback_bytes_per_second(nbytes: int = 400 * 2**20, block: int = 8 * 2**20) -> float:
    """One TCP stream on 127.0.0.1, one thread sending and one receiving: bytes per second, best of 3."""
    payload = memoryview(bytearray(block))
    best = 0.0
    for _ in range(3):
        with socket.create_server(("127.0.0.1", 0)) as server:
            sender = threading.Thread(target=_send, args=(server.getsockname(), payload, nbytes))
            sender.start()
            connection, _ = server.accept()
            with connection:
                buffer = bytearray(block)
                started, received = time.perf_counter(), 0
                while received < nbytes:
                    count = connection.recv_into(buffer)
                    if not count:
                        break
                    received += count
                best = max(best, received / (time.perf_counter() - started))
            sender.join()
    return best


def _send(address: tuple[str, int], payload: memoryview, nbytes: int) -> None:
    with socket.create_connection(address) as connection:
        sent = 0
        while sent < nbytes:
            connection.sendall(payload[:min(len(payload), nbytes - sent)])
            sent += min(len(payload), nbytes - sent)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--megabytes", type=int, default=400, help="size of the NumPy array broadcast")
    parser.add_argument("--workers", type=int, default=4, help="local Dask workers that must each receive it")
    parser.add_argument("--no-scatter", action="store_true",
                        help="leave scatter(broadcast=True) out (at 32 workers it did not finish in 10 minutes)")
    options = parser.parse_args(argv)
    data = np.random.default_rng(0).random(options.megabytes * 2**20 // 8)
    with local_cluster(options.workers, say=lambda line: None, job_name="hpcbridge-bench", timeout=600) as (_, bridge):
        measure(bridge, data, scatter=not options.no_scatter)


def measure(bridge, data: np.ndarray, scatter: bool = True) -> None:
    client = bridge.client
    interval = client.run_on_scheduler(amm_interval)
    print(f"workers: {bridge.n_workers}")
    print(f"megabytes: {data.nbytes / 2**20:.0f}")
    print(f"amm_interval_seconds: {interval:g}")

    hpcbridge_seconds, _ = broadcast_once(bridge, data, interval, "hpcbridge", shared=True)
    first_broadcast(bridge, data, "hpcbridge_private")
    private_seconds, _ = broadcast_once(bridge, data, interval, "hpcbridge_private", shared=False)
    client.run(own_machine, True)
    try:
        first_broadcast(bridge, data, "hpcbridge_private_network")
        network_seconds, one_copy = broadcast_once(bridge, data, interval, "hpcbridge_private_network", shared=False)
    finally:
        client.run(own_machine, False)

    print_limits(data.nbytes, bridge.n_workers, one_copy,
                 {"hpcbridge_private": private_seconds, "hpcbridge_private_network": network_seconds})
    if not scatter:
        return
    peak = client.run_on_scheduler(peak_rss_bytes)
    started = time.perf_counter()
    [future] = client.scatter([data], broadcast=True, hash=False)
    scatter_seconds = time.perf_counter() - started
    print(f"scatter_seconds: {scatter_seconds:.3f}")
    print(f"scatter_scheduler_peak_growth_mb: {(client.run_on_scheduler(peak_rss_bytes) - peak) / 2**20:.0f}")
    time.sleep(2 * interval + 1)
    print(f"scatter_workers_holding_after_amm: {len(client.who_has([future])[future.key])}")
    client.cancel([future])
    print(f"hpcbridge_over_scatter_ratio: {hpcbridge_seconds / scatter_seconds:.2f}")
    print(f"hpcbridge_private_over_scatter_ratio: {private_seconds / scatter_seconds:.2f}")


def print_limits(nbytes: int, copies: int, one_copy: float, seconds: dict[str, float], prefix: str = "") -> None:
    """Print the loopback limit (``nbytes`` times ``copies`` over the bandwidth of one plain TCP stream on
    127.0.0.1, measured now) and the comm limit (``copies`` times ``one_copy``, the seconds of one
    worker-to-worker copy alone), each with every figure of ``seconds`` (by label) over it."""
    bandwidth = loopback_bytes_per_second()
    limit = nbytes * copies / bandwidth
    print(f"{prefix}loopback_gb_per_s: {bandwidth / 1e9:.2f}")
    print(f"{prefix}loopback_limit_seconds: {limit:.3f}")
    for label, value in seconds.items():
        print(f"{label}_over_loopback_limit: {value / limit:.2f}")
    comm_limit = one_copy * copies
    print(f"{prefix}comm_copy_seconds: {one_copy:.3f}")
    print(f"{prefix}comm_limit_seconds: {comm_limit:.3f}")
    for label, value in seconds.items():
        print(f"{label}_over_comm_limit: {value / comm_limit:.2f}")


def own_machine(on: bool, per: str = "process") -> None:
    """Emulation, in a worker process: say it is a machine of its own (``on``), as each worker on a node
    of its own would, so that broadcasts copy worker to worker through the comm; else its real one.
    ``per="node"``: a machine per network namespace instead, shared by the workers in it (the nodes of
    the Slurm test harness share one kernel and one PID namespace, so they are really one machine)."""
    from hpcbridge.cluster import machine_copy

    real = vars(machine_copy).setdefault("_real_machine", machine_copy.machine)
    emulated = f"emulated-{os.getpid()}" if per == "process" else f"emulated-net-{os.stat('/proc/self/ns/net').st_ino}"
    machine_copy.machine = (lambda: emulated) if on else real


def first_broadcast(bridge, data: np.ndarray, label: str, shared: bool = False) -> None:
    """A broadcast's seconds the first time: for private copies (``shared`` False), each worker's copy
    lands in memory its process never had (and here, on a VM, memory the guest never touched: 5.2 s
    against 1.5 s the second time for 32 copies of 100 MB on one machine). The figures compared with the
    limits are the next broadcast's, as every broadcast after a worker's first is, and as the limits'
    own copies reuse their memory."""
    handle = bridge.broadcast(data, shared=shared)
    print(f"{label}_first_seconds: {handle.seconds:.3f}")
    bridge.release(handle)


def broadcast_once(bridge, data: np.ndarray, interval: float, label: str, shared: bool,
                   repeats: int = 1) -> tuple[float, float | None]:
    """One broadcast: its seconds, the bytes that left the client, the scheduler's growth, how the
    copies arrived (network or from a copy on the machine), and who holds one after the Active
    Memory Manager had two intervals to act. Returns its seconds and, for private copies, the
    seconds of one worker-to-worker copy alone (:func:`one_copy_seconds`). With ``repeats`` above 1,
    as many broadcasts are taken in turn: the seconds printed (each, and as ``_seconds`` their median)
    and returned are theirs, the rest is of the last one."""
    client = bridge.client
    each = []
    for _ in range(repeats - 1):
        handle = bridge.broadcast(data, shared=shared)
        each.append(handle.seconds)
        bridge.release(handle)
    peak = client.run_on_scheduler(peak_rss_bytes)
    handle = bridge.broadcast(data, shared=shared)
    each.append(handle.seconds)
    if repeats > 1:
        print(f"{label}_seconds_each: {' '.join(f'{seconds:.3f}' for seconds in each)}")
    print(f"{label}_seconds: {statistics.median(each):.3f}")
    print(f"{label}_bytes_from_client: {handle.nbytes}")
    print(f"{label}_left_the_client_by: {handle.via}")
    print(f"{label}_scheduler_peak_growth_mb: {(client.run_on_scheduler(peak_rss_bytes) - peak) / 2**20:.0f}")
    copies = [stats[handle.name] for stats in client.run(broadcast.worker_stats).values()]
    print(f"{label}_network_copies: {sum(copy['via'] == 'network' for copy in copies)}")
    print(f"{label}_mapped_copies: {sum(copy['via'] == 'shared memory' for copy in copies)}")
    time.sleep(2 * interval + 1)
    held = sum(stats.get(handle.name, {}).get("held", False) for stats in client.run(broadcast.worker_stats).values())
    print(f"{label}_workers_holding_after_amm: {held}")
    one_copy = one_copy_seconds(client, handle.name) if not shared else None
    bridge.release(handle)
    return statistics.median(each), one_copy


def one_copy_seconds(client, name: str) -> float:
    """Seconds of one copy of broadcast ``name`` from one worker to another through the cluster's
    comm (the request a broadcast's copy makes), while nothing else is sent: the best of three. The
    receiver is on another host than the holder where there is one (across the network)."""
    holder, *others = list(client.scheduler_info(n_workers=-1)["workers"])
    receiver = next((other for other in others if get_address_host(other) != get_address_host(holder)), others[0])

    async def copy(dask_worker) -> float:
        started = time.perf_counter()
        reply = await dask_worker.rpc(holder).hpcbridge_broadcast_get(name=name)
        assert reply["status"] == "OK", reply["status"]
        return time.perf_counter() - started

    return min(client.run(copy, workers=[receiver])[receiver] for _ in range(3))


if __name__ == "__main__":
    main()
