"""Sending a broadcast from the client, and releasing it: see :mod:`hpcbridge.cluster.broadcasts`.

The client sends the object once, to one worker (or writes the machine's shared copy itself),
then registers the :class:`~hpcbridge.cluster.broadcasts.BroadcastCopy` plugin that copies it
worker to worker, with the plan of who copies from whom (:func:`~hpcbridge.cluster.broadcasts.plan`):
one copy per machine crosses the network, along a tree; the other workers of a machine map its copy
(``shared``) or copy theirs from it.
"""

from __future__ import annotations

import random
import secrets
import time
from dataclasses import asdict
from typing import Any

from distributed import Client
from distributed.protocol import Serialized, serialize

from hpcbridge.cluster import machine_copy
from hpcbridge.cluster.broadcasts import (
    PLUGIN_PREFIX,
    Broadcast,
    BroadcastCopy,
    BroadcastService,
    drop_source,
    nbytes_of,
    plan,
)


def send(client: Client, obj: Any, name: str | None = None, shared: bool = True) -> Broadcast:
    """Broadcast ``obj`` to every worker of ``client``'s cluster; see the module's docstring.

    ``shared``: workers on one machine map one read-only copy (else each has its own, writable).
    """
    name = name or f"b-{secrets.token_hex(6)}"
    started = time.perf_counter()
    if PLUGIN_PREFIX + name in client.run_on_scheduler(_plugin_names):
        # Registering the plugin again would run the old one's teardown on every worker, which
        # drops the copy just sent, and the new setup would wait for a copy no peer holds.
        raise ValueError(f"a broadcast named {name!r} already exists on this cluster; release it first, "
                         "or choose another name")
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    if not workers:
        raise RuntimeError("no workers to broadcast to: wait for workers first")
    client.register_plugin(BroadcastService())
    machines = client.run(machine_copy.machine)
    nbytes, via, first = _put(client, workers, name, obj, shared, machines)
    planned = plan(first, [worker for worker in workers if worker != first], machines)
    responses = client.register_plugin(BroadcastCopy(name, shared, planned), name=PLUGIN_PREFIX + name)
    if not shared:
        # Every worker holds its own copy: the machine copies it came from go (a worker gone meanwhile took its own).
        client.run(drop_source, name, on_error="ignore")
    failed = {address: reply for address, reply in (responses or {}).items() if reply.get("status") != "OK"}
    if failed:
        raise RuntimeError(f"broadcast {name!r} did not reach {len(failed)} worker(s): {failed}")
    return Broadcast(name, nbytes, time.perf_counter() - started, len(responses or {}), via)


def _put(client: Client, workers: list[str], name: str, obj: Any, shared: bool,
         machines: dict[str, str]) -> tuple[int, str, str]:
    """Give the first worker its copy; return the bytes that left the client, how, and that worker.

    A client on the machine of some worker (a local cluster, a client inside the allocation)
    writes the machine's copy itself and that worker maps it (or, ``shared`` False, copies its own
    from it, as its peers there will): nothing crosses the network. Else, or when the worker
    cannot map it, the serialized object goes to one worker over the comm. ``machines``: each
    worker's :func:`~hpcbridge.cluster.machine_copy.machine`.
    """
    async def put(worker: str, **message: Any) -> Any:
        return await client.rpc(worker).hpcbridge_broadcast_put(name=name, nbytes=nbytes_of(obj), **message)

    here = machine_copy.machine()
    beside = [address for address, machine in machines.items() if here and machine == here]
    copy = machine_copy.publish(obj, f"hpcbridge-broadcast-{name}") if beside else None
    if copy is not None:
        first = random.choice(beside)
        try:
            reply = client.sync(put, first, where=asdict(copy.where()), shared=shared)
        finally:
            copy.close()  # the worker holds its own descriptor now; the memory lives while it does
        if reply == {"status": "OK"}:
            return copy.payload_bytes, "shared memory", first
    header, frames = serialize(obj)
    first = random.choice(workers)
    peers_there = sum(machines.get(worker) == machines.get(first) for worker in workers) > 1 and bool(machines.get(first))
    reply = client.sync(put, first, data=Serialized(header, frames), shared=shared, source=not shared and peers_there)
    if reply != {"status": "OK"}:
        raise RuntimeError(f"worker {first} did not take broadcast {name!r}: {reply}")
    return sum(memoryview(frame).nbytes for frame in frames), "network", first


def release(client: Client, name: str) -> None:
    """Drop broadcast ``name`` from every worker; later workers will not fetch it."""
    try:
        client.unregister_worker_plugin(PLUGIN_PREFIX + name)
    except ValueError:
        raise KeyError(f"no broadcast named {name!r} on this cluster") from None


def names(client: Client) -> list[str]:
    """The broadcasts the cluster holds now, by name."""
    return [name[len(PLUGIN_PREFIX):] for name in client.run_on_scheduler(_plugin_names)
            if name.startswith(PLUGIN_PREFIX)]


def _plugin_names(dask_scheduler: Any) -> list[str]:
    return list(dask_scheduler.worker_plugins)
