"""A run's tail: threads that have nothing left take over the rest of chunks still running.

A map's chunks are planned before their items are timed one by one, and with many threads a
chunk is long (the scheduler hands out a task in milliseconds, so the planner makes no more of
them than it can hand out: :mod:`hpcbridge.client.planning`). When the items' costs differ (a few
items ten or fifty times the others), the last chunks hold the map's end while most threads sit
idle: a static split pays the same.

While a client waits for a run (:func:`hpcbridge.client.collect.collect`), a :class:`Balancer`
looks at the run's tail: once fewer of its chunks remain than the cluster has threads, it asks the
workers where each running chunk is, stops the longest ones after the item each is running
(:func:`hpcbridge.cluster.attempts.cut_many`, the same cut a stuck item's chunk gets) and submits
the rest of each as a few new chunks, as many as there are idle threads to take them. The
scheduler is asked for tasks only for threads that are free, so the cost grows with the idle
threads, not with the items.

:func:`hand_on` puts new chunks in place of a chunk's rest in the run's record (and its run
directory's manifest); :class:`hpcbridge.client.stuck.Handoff` uses it too.
"""

from __future__ import annotations

import dataclasses
import heapq
import secrets
import time
from typing import Any

from distributed import Client

from hpcbridge.client import run_records
from hpcbridge.client.futures import run_on_workers
from hpcbridge.client.planning import SCHEDULER_SECONDS_PER_TASK, plan
from hpcbridge.client.runs import Run, note_when_computed
from hpcbridge.cluster import attempts
from hpcbridge.cluster.chunks import run_chunk
from hpcbridge.rundir import RunDirectory

CHECK_SECONDS = 0.1  # at most this often a waiting client looks at its run's tail
FIRST_CHECK_SECONDS = 0.1  # a run collected sooner than this is never looked at (small maps pay nothing)
ASK_SECONDS = 5.0  # the bound on asking the workers
# Splitting a chunk's rest must bring its projected end this much nearer: a task costs the scheduler
# ~3 ms and a round of asking and cutting 20-200 ms, so a smaller gain would cost more than it saves.
SHORTEST_GAIN_SECONDS = 0.05
# How long after a round a new chunk starts on an idle thread (the cut, the submission, the scheduler).
HAND_ON_SECONDS = 0.05


class Balancer:
    """While a client waits for ``run``: idle threads of the cluster take the rest of its long chunks."""

    def __init__(self, client: Client, run: Run) -> None:
        self.client, self.run = client, run
        self.threads: int | None = None  # asked at the first look (a map collected sooner never asks)
        self.next_check = time.monotonic() + FIRST_CHECK_SECONDS
        self.rounds = self.pieces = 0  # for the record: how often the tail was split, into how many chunks

    def check(self) -> bool:
        """Split the rest of the longest running chunks over the idle threads (at most every
        :data:`CHECK_SECONDS`); True if any chunk was split."""
        if time.monotonic() < self.next_check or self.client.status != "running":
            return False
        self.next_check = time.monotonic() + CHECK_SECONDS
        pending = [(f.key, bounds) for f, bounds in zip(self.run.futures, self.run.bounds)
                   if f is not None and not f.done()]
        if not pending:
            return False
        if self.threads is None:
            try:
                self.threads = sum(self.client.sync(self.client.scheduler.ncores, callback_timeout=ASK_SECONDS).values())
            except Exception:  # noqa: BLE001 -- the scheduler is busy or away: look again later
                return False
        idle = self.threads - len(pending)
        if idle < 1:
            return False
        try:
            answers = self.client.sync(run_on_workers, self.client, attempts.active, self.run.name, callback_timeout=ASK_SECONDS)
        except Exception:  # noqa: BLE001 -- the workers are busy or away: the watch says so if it matters
            return False
        keys = {key for key, _ in pending}
        running = [a for answer in answers.values() if isinstance(answer, list) for a in answer
                   if a["key"] in keys and a["index"] is not None and a["cut"] is None and not a.get("spread")]
        shares = split_shares(running, idle, self.run.seconds_per_item)
        if not shares:
            return False
        by_worker: dict[str, list[str]] = {}
        for attempt in running:
            if attempt["key"] in shares:
                by_worker.setdefault(attempt["worker"], []).append(attempt["key"])
        try:
            cut = self.client.sync(_cut, self.client, by_worker, callback_timeout=ASK_SECONDS)
        except Exception:  # noqa: BLE001 -- the chunks run on: they end as planned
            return False
        rests = []
        for key, rest in cut.items():
            if not isinstance(rest, dict) or rest.get("task") is None:
                continue
            at, stop = rest["at"], rest["stop"]
            rests.append((key, rest, even_bounds(at, stop, shares[key])))
        if not rests:
            return False
        hand_on(self.client, self.run, rests)
        self.rounds += 1
        self.pieces += sum(len(bounds) for _, _, bounds in rests)
        return True


def split_shares(running: list[dict[str, Any]], idle: int, planned_per_item: float = 0.0) -> dict[str, int]:
    """Into how many new chunks to split the rest of each running chunk (by task key), for ``idle`` free threads.

    A chunk's rest is the items after the one it is running; when it is split, all of it goes to new
    chunks, each taking an idle thread. Each chunk has a projected end: unsplit, what its running
    item has left plus its rest's work; split into ``p`` new chunks, :data:`HAND_ON_SECONDS` plus
    the work of the largest piece. A rest's work is its items times the seconds per item its chunk
    has taken so far (``per_item``) or the map's plan said (``planned_per_item``), whichever is
    more. What the running item has left is not known: as long as it has run (``seconds``), or
    what an item should take, whichever is more: an item that runs long tends to run longer
    (heavy-tailed costs), and the items queued behind it are what keeps threads idle at the end.
    Idle threads go one by one to the chunk whose projected end is latest, while that brings it at
    least :data:`SHORTEST_GAIN_SECONDS` nearer; a chunk that cannot gain more is left as it is.
    The scheduler hands out a round's new chunks one after another (the planner's
    ``SCHEDULER_SECONDS_PER_TASK`` each), so a piece's projected end also counts the pieces handed
    out before it in the round: at a thousand idle threads, splitting stops where a new task would
    start later than the work it takes over.

    >>> running = [{"key": "a", "index": 10, "stop": 100, "per_item": 0.01, "seconds": 0.0},
    ...            {"key": "b", "index": 10, "stop": 20, "per_item": 0.01, "seconds": 0.0},
    ...            {"key": "c", "index": 18, "stop": 20, "per_item": 0.01, "seconds": 0.9}]
    >>> split_shares(running, idle=4)
    {'c': 1, 'a': 3}
    """
    heap = []  # (minus its projected end, its place, the rest): the latest end first
    for place, a in enumerate(running):
        items = a["stop"] - a["index"] - 1
        per_item = max(a.get("per_item") or 0.0, planned_per_item)
        if items >= 1 and per_item > 0:
            running_left = max(a.get("seconds") or 0.0, per_item - (a.get("seconds") or 0.0))
            rest = _Rest(a["key"], items, per_item, running_left)
            heap.append((-rest.end(0), place, rest))
    heapq.heapify(heap)
    shares: dict[str, int] = {}
    free = idle
    while heap and free > 0:
        minus_end, place, rest = heapq.heappop(heap)
        queued = idle - free  # the pieces handed out before in this round: the scheduler sends them first
        best = min(range(rest.pieces + 1, min(rest.items, rest.pieces + 2, rest.pieces + free) + 1),
                   key=lambda more: (rest.end(more, queued + more - rest.pieces), more), default=None)
        if best is None or -minus_end - rest.end(best, queued + best - rest.pieces) < SHORTEST_GAIN_SECONDS:
            continue
        free -= best - rest.pieces
        ended = rest.end(best, queued + best - rest.pieces)
        rest.pieces = shares[rest.key] = best
        heapq.heappush(heap, (-ended, place, rest))
    return shares


@dataclasses.dataclass
class _Rest:
    """A running chunk's items after the one it runs, as :func:`split_shares` weighs splitting them."""

    key: str
    items: int
    per_item: float  # seconds
    running_left: float  # seconds its running item has left, as guessed
    pieces: int = 0  # the new chunks it is split into so far (0: not split)

    def end(self, pieces: int, queued: int = 0) -> float:
        """Its projected end (seconds from now) when split into ``pieces`` new chunks (0: left as it
        is), the ``queued`` pieces of this round handed out before them."""
        if pieces == 0:
            return self.running_left + self.items * self.per_item
        return HAND_ON_SECONDS + queued * SCHEDULER_SECONDS_PER_TASK + -(-self.items // pieces) * self.per_item


def even_bounds(low: int, high: int, pieces: int) -> list[tuple[int, int]]:
    """``[low, high)`` cut into ``pieces`` ranges whose sizes differ by at most one item.

    >>> even_bounds(0, 10, 3)
    [(0, 4), (4, 7), (7, 10)]
    """
    pieces = max(1, min(pieces, high - low))
    size, extra = divmod(high - low, pieces)
    bounds, at = [], low
    for piece in range(pieces):
        end = at + size + (piece < extra)
        bounds.append((at, end))
        at = end
    return bounds


def hand_on(client: Client, run: Run, rests: list[tuple[str, dict[str, Any], list[tuple[int, int]]]]) -> None:
    """Submit the rest of each cut chunk as new chunks, and list them in ``run`` in the chunk's place.

    ``rests`` holds, per cut chunk: its task key, what :func:`hpcbridge.cluster.attempts.cut` handed
    back (``at``: its first item not computed; ``task``: the chunk task of the rest; ``extra``) and
    the new chunks' bounds, which cover ``[at, end of the chunk)``. The run's record on the
    scheduler (for other clients and ``results(name)``; sent in the background,
    :mod:`hpcbridge.client.run_records`) and its run directory's manifest are written once for
    all of them.
    """
    prefix = f"{run.name}-h{secrets.token_hex(3)}"
    chunks, places = [], []  # the new chunk tasks; per cut chunk, its key and how many new chunks follow it
    for key, rest, bounds in rests:
        at, task = rest["at"], rest["task"]
        per_item = task.expected_seconds / max(1, len(task.items))
        chunks += [dataclasses.replace(task, items=task.items[a - at:b - at], start=a, expected_seconds=per_item * (b - a))
                   for a, b in bounds]
        places.append((key, at, bounds))
    # One graph for them all (the run's extra arguments are one run's: the same for every chunk): one
    # message and one update on the scheduler, where a client.submit each cost ~13 ms under load.
    extra = tuple(rests[0][1]["extra"])
    futures = iter(client.map(run_chunk, chunks, *([value] * len(chunks) for value in extra),
                              key=[f"{prefix}-{number}" for number in range(len(chunks))], pure=False,
                              resources=run.resources))
    index = {f.key: i for i, f in enumerate(run.futures) if f is not None}
    for key, at, bounds in places:
        new = [next(futures) for _ in bounds]
        note_when_computed(client, run, new, bounds)
        i = index.pop(key)
        low, _ = run.bounds[i]
        run.bounds[i:i + 1] = [(low, at), *bounds]
        run.futures[i:i + 1] = [run.futures[i], *new]
        index = {f.key: j for j, f in enumerate(run.futures) if f is not None}
    record = {**run.record(), "bounds": list(run.bounds), "futures": list(run.futures)}  # later rounds change the lists
    run_records.publish_soon(client, run.name, record)
    if run.directory:
        directory = RunDirectory(run.directory)
        manifest = directory.manifest()
        if manifest:
            directory.write_manifest({**manifest, "bounds": run.bounds})


def hand_on_planned(client: Client, run: Run, rests: list[tuple[str, dict[str, Any]]]) -> None:
    """:func:`hand_on` each cut chunk's rest (by task key, what its cut handed back) as chunks planned over the
    cluster's threads: a stuck item's chunk (:mod:`hpcbridge.client.stuck`), or a cut whose answer was lost
    (:mod:`hpcbridge.client.collect`)."""
    threads = max(1, sum(client.nthreads().values()))
    planned = []
    for key, rest in rests:
        at, stop = rest["at"], rest["stop"]
        per_item = run.seconds_per_item or rest["task"].expected_seconds / max(1, stop - at)
        planned.append((key, rest, plan(at, stop, None, threads, per_item)))
    hand_on(client, run, planned)


async def _cut(client: Client, by_worker: dict[str, list[str]]) -> dict[str, Any]:
    """Cut the chunks ``by_worker`` lists, on those workers at once: their rests by task key."""
    keys = [key for listed in by_worker.values() for key in listed]
    answer = await run_on_workers(client, attempts.cut_many, keys, workers=list(by_worker))
    return {key: rest for rests in answer.values() if isinstance(rests, dict) for key, rest in rests.items()}
