"""Broadcast: one object sent once from the client, copied worker to worker, kept until released.

Why not ``client.scatter(x, broadcast=True)``: it routes the data through the scheduler (whose
memory grows by the full size), and Dask's Active Memory Manager deletes the extra replicas
within about two seconds, so tasks then fetch the data again from the one worker that still
holds it (distributed 2026.8, measured here).

How it works instead:

1. The client serializes the object once and sends it straight to one worker (no scheduler hop).
   A client on the same machine as a worker (a local cluster, a client inside the allocation)
   writes the machine's shared copy itself instead (see 3.), and that worker maps it.
2. A :class:`BroadcastCopy` worker plugin named after the broadcast is registered. The scheduler
   keeps only the plugin (a few hundred bytes) and runs its ``setup`` on every worker, now and on
   every worker that joins later. ``setup`` fetches the object from a peer that holds it. The
   plugin carries a plan for the workers the client saw (:func:`plan`): one worker per machine
   asks one parent (a binomial tree over machines, :func:`tree`), which answers once it holds the
   object and sends one copy at a time, its children in order, so the copies double each round
   (32 machines in 5 rounds) and nobody polls; the other workers of a machine ask its first.
   A worker that joins later (or whose parent left) asks peers in random order instead; a holder
   serves at most :data:`MAX_SENDS_PER_HOLDER` such copies at a time and turns the rest away.
3. Workers on one machine share one copy (``shared=True``, the default): the first worker there
   to hold the object writes it into a sealed shared-memory file (:mod:`hpcbridge.cluster.machine_copy`)
   and its peers on that machine map it read-only instead of receiving it over the network. So
   one copy crosses the network per machine and one lives in its memory; the objects the tasks
   see are read-only (a NumPy array has ``flags.writeable == False``). ``shared=False`` gives
   every worker its own writable copy: one worker per machine receives it as above and writes
   the machine's copy, from which the others there copy their
   own (a memory copy instead of a TLS stream each); that machine copy is closed once every
   worker holds its own.
4. The object lives in this module's :data:`_HELD` on each worker, outside Dask's key store, so
   the Active Memory Manager never sees it and never deletes it. Dask reports it as unmanaged
   memory. It stays until :func:`release` unregisters the plugin (or the cluster ends); a client
   that disconnects does not take it with it. A name in use is refused at once: release it first.

Tasks find it with :func:`value`, by name; a task never carries the data.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass
from typing import Any

from distributed import WorkerPlugin
from distributed.comm import get_address_host
from distributed.core import Status
from distributed.protocol import to_serialize

from hpcbridge.cluster import machine_copy

PLUGIN_PREFIX = "hpcbridge-broadcast-"
MAX_SENDS_PER_HOLDER = 2
FETCH_TIMEOUT = 600.0
# How long a planned child waits for its parent to hold the copy and serve it before it asks other
# peers (its parent is slow, paused or stuck): rounds of a tree of 32 take seconds for 100 MB here.
PARENT_WAIT = 120.0
SERVE_POLL_SECONDS = 0.005  # how often a parent looks whether it holds the object, or whose turn it is
_GET = "hpcbridge_broadcast_get"
_PUT = "hpcbridge_broadcast_put"

# Worker-side state, one copy per worker process.
_HELD: dict[str, Any] = {}
_STATS: dict[str, dict[str, Any]] = {}
_SENDING: dict[str, int] = {}
_SHARED: dict[str, machine_copy.MachineCopy] = {}
# Private broadcasts: the machine copy that this worker's peers on its machine take their own copies
# from while the broadcast spreads (closed once every worker holds one: :func:`drop_source`).
_SOURCES: dict[str, machine_copy.MachineCopy] = {}


@dataclass
class _Queue:
    """The planned children waiting for a holder's copy of one broadcast (their ranks), and
    whether it was released here meanwhile (they are then told it is missing)."""

    ranks: list[int]
    gone: bool = False


_QUEUES: dict[str, _Queue] = {}  # per broadcast, its planned children waiting for their copy on this worker


@dataclass(frozen=True)
class Broadcast:
    """A handle to a broadcast object; pass it to ``map``, where tasks receive the object itself.

    ``nbytes`` is what left the client (the serialized frames, sent once); ``seconds`` is the time
    from the start of serialization until every worker held a copy; ``n_workers`` is how many
    workers held it then; ``via`` is how it left: ``"network"`` to one worker, or ``"shared
    memory"`` when the client shares a machine with a worker and wrote the shared copy itself.
    """

    name: str
    nbytes: int
    seconds: float
    n_workers: int
    via: str = "network"

    def __str__(self) -> str:
        return self.name

    def _repr_html_(self) -> str:
        """A notebook's view: the name, the size that left the client, the workers that held it, how it left."""
        from html import escape

        from dask.utils import format_bytes

        known = self.n_workers or self.nbytes
        rows = [("Size", format_bytes(self.nbytes) if known else "unknown (named, sent by another client)"),
                ("Workers", str(self.n_workers) if known else "unknown"),
                ("Sent", f"via {self.via} in {self.seconds:.2f} s" if known else "unknown")]
        cells = "".join(f'<tr><th style="text-align: left;">{name}</th><td style="text-align: left;">{escape(value)}'
                        "</td></tr>" for name, value in rows)
        return f"<div><strong>Broadcast</strong> <code>{escape(self.name)}</code><table>{cells}</table></div>"

    @classmethod
    def named(cls, name: str) -> Broadcast:
        """A handle to a broadcast that another client sent, known by its name."""
        return cls(name, 0, 0.0, 0)


def value(name: str) -> Any:
    """The object broadcast as ``name``, on the worker that calls this (for tasks).

    Normally the copy arrived when the worker registered the broadcast's plugin; if a task runs
    before that finished, the copy is fetched here, once.
    """
    try:
        return _HELD[name]
    except KeyError:
        pass
    from distributed import get_worker
    from distributed.utils import sync

    worker = get_worker()
    if PLUGIN_PREFIX + name not in worker.plugins:
        raise KeyError(f"no broadcast named {name!r} on this cluster (released, or never sent)")
    sync(worker.loop, _fetch, worker, name, FETCH_TIMEOUT, worker.plugins[PLUGIN_PREFIX + name].shared)
    return _HELD[name]


def worker_stats() -> dict[str, dict[str, Any]]:
    """Per broadcast held on this worker: where the copy came from, how often it was fetched, bytes,
    how many peers it asked for it (``asked``), and the copies it sent on (``sent``, and the most
    at once: ``most_at_once``).

    Run it on every worker with ``client.run(worker_stats)``; ``fetches`` stays 1 for a copy that
    was never lost (0 on the worker the client sent it to).
    """
    return {name: dict(stats, held=name in _HELD) for name, stats in _STATS.items()}


def _install(worker: Any) -> None:
    worker.handlers.setdefault(_GET, _serve)
    worker.handlers.setdefault(_PUT, _receive)


async def _serve(comm: Any, name: str, machine: str = "", rank: int | None = None, wait: float = 0.0,
                 local: bool = False) -> Status:
    """Give the asking peer ``name``: where to map our machine's copy when it runs on our machine,
    else the data itself, unless we are already sending enough copies.

    A planned child (``rank``: its place in the plan, :func:`plan`) waits up to ``wait`` seconds
    until we hold the object and it is its turn: one copy at a time, the lowest rank first (it has
    the most children of its own to serve next). A planned child on our machine (``local``) only
    waits until we hold the object: it maps our machine's copy, which costs us nothing.
    """
    mapped = local and bool(machine) and machine == machine_copy.machine()
    if rank is not None:
        queue = await _wait_for_turn(name, rank, wait, in_turn=not mapped)
        if queue is not None:
            try:
                source = _machine_copy(name) if mapped else None
                if source is not None:
                    await comm.write({"status": "same machine", "where": asdict(source.where())})
                else:
                    await _send(comm, name)
            finally:
                _leave(name, queue, rank)
            return Status.dont_reply
    source = _machine_copy(name)
    if name not in _HELD:
        await comm.write({"status": "missing"})
    elif source is not None and machine and machine == machine_copy.machine():
        await comm.write({"status": "same machine", "where": asdict(source.where())})
    elif _SENDING.get(name, 0) >= MAX_SENDS_PER_HOLDER:
        await comm.write({"status": "busy"})
    else:
        await _send(comm, name)
    return Status.dont_reply


def _machine_copy(name: str) -> machine_copy.MachineCopy | None:
    """This machine's copy of ``name`` that we hold: the shared object itself, or a private broadcast's source."""
    return _SHARED.get(name) or _SOURCES.get(name)


async def _send(comm: Any, name: str) -> None:
    """Send our copy of ``name`` to a peer; count it, and the most copies we sent at once."""
    _SENDING[name] = _SENDING.get(name, 0) + 1
    stats = _stats(name)
    stats["sent"] = stats.get("sent", 0) + 1
    stats["most_at_once"] = max(stats.get("most_at_once", 0), _SENDING[name])
    try:
        await comm.write({"status": "OK", "data": to_serialize(_HELD[name])})
    finally:
        _SENDING[name] -= 1


async def _wait_for_turn(name: str, rank: int, wait: float, in_turn: bool = True) -> _Queue | None:
    """Wait until we hold ``name`` and (``in_turn``) no copy of it is being sent and ``rank`` is the
    lowest rank waiting: then the queue, where ``rank`` stays listed until :func:`_leave`. None after
    ``wait`` seconds, or when the broadcast was released here meanwhile."""
    queue = _QUEUES.setdefault(name, _Queue([]))
    queue.ranks.append(rank)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and not queue.gone:
        if name in _HELD and (not in_turn or not _SENDING.get(name) and min(queue.ranks) == rank):
            return queue
        await asyncio.sleep(SERVE_POLL_SECONDS)
    _leave(name, queue, rank)
    return None


def _leave(name: str, queue: _Queue, rank: int) -> None:
    queue.ranks.remove(rank)
    if not queue.ranks and _QUEUES.get(name) is queue:
        del _QUEUES[name]


def plan(first: str, others: list[str], machines: dict[str, str]) -> dict[str, tuple[str, int, bool]]:
    """Who a broadcast's workers copy it from: per worker but ``first``, its parent, its rank, and whether
    the parent is on its machine (``machines``: each worker's :func:`machine_copy.machine`).

    One worker per machine (``first`` on its own; elsewhere the first listed) gets its copy over the
    network, along a binomial tree (:func:`tree`). It also writes the machine's copy, and the other
    workers there map it (a shared broadcast) or take their own copies from that memory (a private
    one): one copy per machine crosses the network, and a worker's copy costs its machine nothing or a
    memory copy, not a TLS stream (0.1-0.3 CPU-s per 100 MB here). Without a plan, the workers of a
    node asked peers at random and most got theirs over the network before a peer there held it (25
    of 32 on the Slurm harness's 4 nodes of 8).

    >>> plan("a", ["b", "c", "d"], {"a": "m1", "b": "m1", "c": "m2", "d": "m2"})
    {'c': ('a', 1, False), 'b': ('a', 2, True), 'd': ('c', 3, True)}
    """
    leaders = {machines.get(first) or first: first}
    for worker in others:
        leaders.setdefault(machines.get(worker) or worker, worker)
    order = list(leaders.values())
    planned = {worker: (parent, rank, False) for worker, (parent, rank) in tree(first, order[1:]).items()}
    for worker in others:
        if worker not in planned:
            planned[worker] = (leaders[machines.get(worker) or worker], len(planned) + 1, True)
    return planned


def tree(first: str, others: list[str]) -> dict[str, tuple[str, int]]:
    """The plan of a broadcast that starts at ``first``: per other worker, the peer it asks and its rank.

    A binomial tree: ranks follow the list (``first`` is 0) and rank ``i`` asks rank ``i`` minus its
    highest power of two. Each holder sends one copy at a time, lowest rank first, so the holders
    double each round: rank 0 sends to 1, then 0 and 1 send to 2 and 3, then 0-3 to 4-7, and so on.

    >>> tree("a", ["b", "c", "d", "e"])
    {'b': ('a', 1), 'c': ('a', 2), 'd': ('b', 3), 'e': ('a', 4)}
    """
    order = [first, *others]
    return {worker: (order[rank - (1 << (rank.bit_length() - 1))], rank) for rank, worker in enumerate(order) if rank}


def _receive(name: str, nbytes: int, data: Any = None, where: dict | None = None,
             shared: bool = True, source: bool = False) -> dict[str, str]:
    """Take the copy the client sends (the first and only one that leaves the client): the data,
    or, from a client on our machine, where to map the machine's copy it wrote. ``source``: a
    private broadcast whose plan has workers on our machine copy theirs from us."""
    if where is not None:
        copy = machine_copy.attach(machine_copy.Where(**where))
        if copy is None:
            return {"status": "cannot map"}  # the client then sends the data
        if shared:
            _keep_shared(name, copy)
        else:
            _SOURCES[name] = copy  # our peers here copy theirs from it too
            _HELD[name] = copy.load_private()
    else:
        _hold(name, data, shared, source)
    _STATS[name] = {"source": "client", "fetches": 0, "asked": 0, "nbytes": nbytes, "seconds": 0.0,
                    "via": "network" if where is None else "shared memory", "shared": name in _SHARED}
    return {"status": "OK"}


def _hold(name: str, obj: Any, shared: bool, source: bool = False) -> None:
    """Keep ``obj`` as broadcast ``name``; when ``shared``, as the machine's one shared copy. A private
    one (``shared`` False) that peers on this machine copy from (``source``) is also written into a
    machine copy for them, before it counts as held (they map it as soon as it does)."""
    copy = machine_copy.publish(obj, f"hpcbridge-broadcast-{name}") if shared or source else None
    if copy is None:
        _HELD[name] = obj
    elif shared:
        _keep_shared(name, copy)  # the private copy goes; every worker here maps the same pages
    else:
        _SOURCES[name] = copy
        _HELD[name] = obj


def _take_mapped(name: str, where: dict[str, Any], shared: bool) -> int | None:
    """Hold ``name`` from a peer's machine copy on our machine: mapped (``shared``), else as a private
    copy of it; its bytes, or None when it cannot be mapped (the peer left meanwhile, or another user's)."""
    copy = machine_copy.attach(machine_copy.Where(**where))
    if copy is None:
        return None
    if shared:
        _keep_shared(name, copy)
    else:
        try:
            _HELD[name] = copy.load_private()
        finally:
            copy.release()
    return copy.nbytes


def drop_source(name: str) -> None:
    """Worker side (``client.run``): close the machine copy a private broadcast ``name`` spread from
    here (every worker holds its own copy now; a worker that joins later copies a peer's)."""
    source = _SOURCES.pop(name, None)
    if source is not None:
        source.release()


def _keep_shared(name: str, copy: machine_copy.MachineCopy) -> None:
    """Hold broadcast ``name`` as the objects mapped from the machine's shared copy."""
    _SHARED[name] = copy
    _HELD[name] = copy.load()


async def _fetch_from_parent(worker: Any, name: str, parent: str, rank: int, timeout: float, shared: bool,
                             local: bool = False, source: bool = False) -> bool:
    """Copy ``name`` from our ``parent`` in the broadcast's plan, waiting for our turn, or, from a parent
    on our machine (``local``), from its machine copy; False when the parent could not give it (it
    left, or did not get it in time: the caller asks others). ``source``: peers on our machine copy
    theirs from us (a private broadcast's plan)."""
    started = time.monotonic()
    _asked(name)
    try:
        reply = await worker.rpc(parent).hpcbridge_broadcast_get(
            name=name, rank=rank, wait=timeout, machine=machine_copy.machine() if local else "", local=local)
    except (OSError, KeyError):
        return False
    status = reply.get("status") if isinstance(reply, dict) else None
    if status == "same machine" and (mapped := _take_mapped(name, reply["where"], shared)) is not None:
        _record_fetch(name, parent, "shared memory", mapped, started)
        return True
    if status != "OK":
        return False
    _hold(name, reply["data"], shared, source)
    _record_fetch(name, parent, "network", nbytes_of(reply["data"]), started)
    return True


def _stats(name: str) -> dict[str, Any]:
    """This worker's figures of broadcast ``name`` (:func:`worker_stats`), made on first use."""
    return _STATS.setdefault(name, {"fetches": 0, "asked": 0})


def _asked(name: str) -> None:
    stats = _stats(name)
    stats["asked"] = stats.get("asked", 0) + 1


async def _fetch(worker: Any, name: str, timeout: float, shared: bool = True) -> None:
    """Copy ``name`` from a peer that holds it: ask peers in random order, those on our host
    first, until one sends it; a peer on our machine with a machine copy lets us map it instead
    (or copy ours from it, for a private broadcast)."""
    started = time.monotonic()
    pause = 0.02
    here = machine_copy.machine()
    while name not in _HELD:
        identity = await worker.scheduler.identity(n_workers=-1)
        peers = [address for address in identity["workers"] if address != worker.address]
        random.shuffle(peers)
        peers.sort(key=lambda address: get_address_host(address) != worker.ip)
        for peer in peers:
            _asked(name)
            try:
                reply = await worker.rpc(peer).hpcbridge_broadcast_get(name=name, machine=here)
            except (OSError, KeyError):
                continue  # the peer left, or does not speak hpcbridge (yet)
            status = reply.get("status") if isinstance(reply, dict) else None
            if status == "same machine":
                mapped = _take_mapped(name, reply["where"], shared)
                if mapped is None:
                    here = ""  # cannot map it (the holder left, or another user): copy over the network
                    continue
                _record_fetch(name, peer, "shared memory", mapped, started)
                return
            if status == "OK":
                _hold(name, reply["data"], shared)
                _record_fetch(name, peer, "network", nbytes_of(reply["data"]), started)
                return
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"no peer sent broadcast {name!r} within {timeout:.0f} s")
        await asyncio.sleep(pause)
        pause = min(0.5, pause * 2)


def _record_fetch(name: str, peer: str, via: str, nbytes: int, started: float) -> None:
    stats = _stats(name)
    stats.update(source=peer, via=via, nbytes=nbytes, seconds=time.monotonic() - started,
                 shared=name in _SHARED)
    stats["fetches"] += 1


def nbytes_of(obj: Any) -> int:
    return int(getattr(obj, "nbytes", 0))


class BroadcastService(WorkerPlugin):
    """Teaches every worker the two messages broadcasts use (send a copy, take the client's copy)."""

    idempotent = True
    name = "hpcbridge-service"

    def setup(self, worker: Any) -> None:
        _install(worker)


class BroadcastCopy(WorkerPlugin):
    """Holds one broadcast on a worker: fetched from a peer at setup, dropped at teardown.

    ``plan``: per worker the client saw, the parent it asks, its rank and whether that parent is on its
    machine (:func:`plan`).
    """

    def __init__(self, name: str, shared: bool = True, plan: dict[str, tuple] | None = None) -> None:
        self.broadcast_name = name
        self.shared = shared
        self.plan = plan or {}

    async def setup(self, worker: Any) -> None:
        _install(worker)
        if self.broadcast_name in _HELD:
            return
        planned = self.plan.get(worker.address)
        if planned is not None:
            parent, rank, *local = planned
            source = any(entry[0] == worker.address and entry[2:3] == (True,) for entry in self.plan.values())
            if await _fetch_from_parent(worker, self.broadcast_name, parent, rank, PARENT_WAIT, self.shared,
                                        local=bool(local and local[0]), source=source):
                return
        await _fetch(worker, self.broadcast_name, FETCH_TIMEOUT, self.shared)

    def teardown(self, worker: Any) -> None:
        queue = _QUEUES.pop(self.broadcast_name, None)
        if queue is not None:
            queue.gone = True
        _HELD.pop(self.broadcast_name, None)
        _STATS.pop(self.broadcast_name, None)
        shared = _SHARED.pop(self.broadcast_name, None)
        if shared is not None:
            shared.close()  # the memory goes when the tasks still using the object drop it
        drop_source(self.broadcast_name)
