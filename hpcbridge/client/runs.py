"""A map on the cluster: its name claimed, its chunks submitted and published, found again by name.

Every chunk is submitted before :meth:`~hpcbridge.client.bridge.Bridge.map` returns, and the run
is published on the scheduler under its name (``client.publish_dataset``): the scheduler then
holds the results for the run, not for the client, so a client that disconnects or dies loses
nothing; another one attaches through the scheduler file and collects them with
``results(name)`` (:mod:`hpcbridge.client.collect`).

The workers also save every finished chunk in the run's directory (:mod:`hpcbridge.rundir`),
so results outlive the cluster too: a later ``map`` of the same name, function and items
computes only what no chunk file holds.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Future

from hpcbridge.client.planning import TARGET_CHUNK_SECONDS, estimate_key, plan, probe, remembered_estimate
from hpcbridge.cluster import broadcasts
from hpcbridge.cluster.attempts import install_death_notes
from hpcbridge.cluster.chunks import ChunkTask, run_chunk
from hpcbridge.rundir import (
    RunDirectory,
    RunMismatchError,
    describe_ranges,
    function_identity,
    items_digest,
    missing_ranges,
    stamp,
)

RUN_MARKER = "hpcbridge-run"


CLAIM = "starting"  # a published record with this key is a name taken by a run that is being started


class ItemError(Exception):
    """A user function failed on one item; carries the item's index, the item and the remote traceback.

    It is the first failing item (by index) of its run. ``results`` holds every result the run
    has, in input order (``None`` for the failing items and any without a result), ``errors``
    every failing item's error by index, ``missing`` the item ranges that have no result for
    another reason (none, unless the cluster also lost part of the run).
    """

    def __init__(self, run: str, index: int, item: str, worker: str, error: str, remote_traceback: str,
                 results: list[Any] | None = None, errors: dict[int, str] | None = None,
                 missing: Sequence[tuple[int, int]] = ()) -> None:
        super().__init__(run, index, item, worker, error, remote_traceback)
        self.run, self.index, self.item, self.worker = run, index, item, worker
        self.error, self.remote_traceback = error, remote_traceback
        self.results, self.errors, self.missing = results, dict(errors or {}), list(missing)

    def failed_items(self) -> list[int]:
        """The indices of the items that failed (this one and any other)."""
        return sorted(self.errors) or [self.index]

    def _others(self) -> str:
        if self.results is None:
            return ""
        failed = self.failed_items()
        without = len(failed) + sum(high - low for low, high in self.missing)
        others = [i for i in failed if i != self.index]
        more = f"; {len(others)} more failed: {describe_items(others)}" if others else ""
        lost = f"; no result for {describe_ranges(self.missing)}" if self.missing else ""
        return (f"\n{len(self.results) - without} of {len(self.results)} items have results (in this error's "
                f".results, None where an item has none){more}{lost}")

    def __str__(self) -> str:
        return (f"item {self.index} of run {self.run!r} failed on {self.worker}: {self.error}\n"
                f"the item: {self.item}{self._others()}\nremote traceback:\n{self.remote_traceback}")


class ItemKilledWorker(ItemError):
    """The item's worker process died while it ran (its memory limit, ``os._exit``, a crash, a signal).

    The error says the cause as the worker's nanny saw it; the item is not run again (it ran on
    one worker when it was the only item running there, on at most two otherwise).
    """


class ItemTimedOut(ItemError):
    """The item ran longer than the map's ``item_timeout``; its worker process was ended to stop it."""


def item_error_class(error: str) -> type[ItemError]:
    """The :class:`ItemError` subclass for an item's error text (as the chunk reported it)."""
    if error.startswith("WorkerDied: "):
        return ItemKilledWorker
    if error.startswith("ItemTimeout: "):
        return ItemTimedOut
    return ItemError


def describe_items(indices: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indices[:limit])
    return shown + (f" and {len(indices) - limit} more" if len(indices) > limit else "")


@dataclass
class Run:
    """A map that the cluster is computing or holds: its name, its chunks, and their futures.

    A chunk whose future is ``None`` was saved on disk by an earlier cluster (a resumed run).
    ``len(run)`` is its number of items; ``run.result()`` (or iterating over the run) waits for
    it and gives the results in input order, as ``bridge.gather(run)`` does, through the bridge
    that made the run (``bridge``; None for a run read from a record or from disk).
    """

    name: str
    n_items: int
    bounds: list[tuple[int, int]]
    futures: list[Future | None] = field(repr=False)
    function: str = ""
    directory: str | None = None
    bridge: Any = field(default=None, repr=False, compare=False)
    _values: Any = field(default=None, init=False, repr=False, compare=False)
    # What the run's measured seconds per item are remembered under (see remembered_estimate);
    # set by start, not published: a run read from a record or from disk teaches nothing.
    estimate_key: str | None = field(default=None, repr=False, compare=False)
    # The id in the run's task keys and the planned seconds per item (set by start): chunks handed
    # off from a stuck one get keys of the same start (see hpcbridge.client.collect).
    start_id: str | None = field(default=None, repr=False, compare=False)
    seconds_per_item: float = field(default=0.0, repr=False, compare=False)

    def __len__(self) -> int:
        return self.n_items

    def __bool__(self) -> bool:
        return True  # a run is a handle, also when it has no items

    def __iter__(self) -> Iterator[Any]:
        """The results in input order (waits for the whole run, as :meth:`result`)."""
        return iter(self.result())

    def __repr__(self) -> str:
        return (f"<Run {self.name!r}: {self.function or 'a function'} over {self.n_items} items in "
                f"{len(self.bounds)} chunks, {self.done_items()} done>")

    def result(self, timeout: float | None = None, stack: bool = False) -> Any:
        """Wait for the run and return its results in input order: ``bridge.gather(run)``, kept once collected.

        ``timeout`` (seconds) and ``stack`` are those of :meth:`hpcbridge.Bridge.gather`; errors too
        (:class:`ItemError`, :class:`~hpcbridge.client.losses.RunLost`, ``TimeoutError``).
        """
        if self._values is None or stack:
            if self.bridge is None:
                raise RuntimeError(f"run {self.name!r} has no bridge to collect it through: use "
                                   f"bridge.gather(run) or bridge.results({self.name!r})")
            values = self.bridge.gather(self, stack=stack, timeout=timeout)
            if stack:
                return values
            self._values = values
        return self._values

    def done_items(self) -> int:
        """How many items are computed (in finished chunks, or saved by an earlier cluster)."""
        return sum(hi - lo for (lo, hi), f in zip(self.bounds, self.futures) if f is None or f.done())

    def record(self) -> dict[str, Any]:
        """What the scheduler keeps under the run's name (the futures keep the results alive)."""
        return {RUN_MARKER: 1, "n_items": self.n_items, "bounds": self.bounds, "futures": self.futures,
                "function": self.function, "directory": self.directory}

    @classmethod
    def from_record(cls, name: str, record: Any) -> Run:
        if not isinstance(record, dict) or RUN_MARKER not in record:
            raise KeyError(f"{name!r} is a published dataset, but not an hpcbridge run")
        if CLAIM in record:
            raise KeyError(f"run {name!r} is being started by a client and has no chunks yet; try again "
                           "once its map has returned")
        return cls(name, record["n_items"], [tuple(b) for b in record["bounds"]], list(record["futures"]),
                   record.get("function", ""), record.get("directory"))

    @classmethod
    def from_disk(cls, directory: RunDirectory) -> Run:
        """A run as its run directory holds it (no cluster): every saved chunk, no futures."""
        manifest = directory.manifest()
        saved = directory.saved()
        n_items = int(manifest.get("n_items", saved[-1][1] if saved else 0))
        planned = [(int(low), int(high)) for low, high in manifest.get("bounds") or ()]
        bounds = planned if planned and set(saved) <= set(planned) else saved
        return cls(directory.name, n_items, bounds, [None] * len(bounds), str(manifest.get("function", "")),
                   directory.path)


def new_run_name() -> str:
    """A run name that is unique and sorts by time: ``run-20260101-120000-1a2b3c``."""
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def start(client: Client, fn: Callable[..., Any], items: Sequence[Any], extra: Sequence[Any] = (),
          name: str | None = None, stack: bool = False, chunk_size: int | None = None,
          root: str | None = None, item_timeout: float | None = None) -> Run:
    """Submit ``fn(item, *extra)`` for every item as chunks, and publish the run under ``name``.

    With a run directory root (``root``), finished chunks are saved under ``root/name``; when that
    folder already holds a run of the same function and items, only the items it lacks are
    submitted (the run resumes); a different function or items raise :class:`RunMismatchError`.
    An item that runs longer than ``item_timeout`` seconds is ended (by ending its worker process)
    and fails with :class:`ItemTimedOut`.
    """
    name = name or new_run_name()
    start_id = _claim(client, name)
    try:
        note_deaths(client)
        return _start_claimed(client, fn, items, extra, name, start_id, stack, chunk_size, root, item_timeout)
    except BaseException:
        _unclaim(client, name, start_id)
        raise


def _start_claimed(client: Client, fn: Callable[..., Any], items: Sequence[Any], extra: Sequence[Any], name: str,
                   start_id: str, stack: bool, chunk_size: int | None, root: str | None,
                   item_timeout: float | None = None) -> Run:
    """:func:`start` once ``name`` is claimed: check the run directory, plan, submit, publish."""
    if not (hasattr(items, "__len__") and hasattr(items, "__getitem__")):
        items = list(items)
    n = len(items)
    threads = max(1, sum(client.nthreads().values()))
    extra = tuple(extra)
    directory = RunDirectory.under(root, name) if root else None
    run = Run(name, n, [], [], getattr(fn, "__qualname__", repr(fn)), directory.path if directory else None)
    manifest: dict[str, Any] = {}
    saved: list[tuple[int, int]] = []
    identity = function_identity(fn)
    if directory is not None:
        digest = items_digest(items, [a for a in extra if not isinstance(a, broadcasts.Broadcast)])
        manifest = directory.manifest()
        if manifest:
            _check_same_run(name, directory, manifest, identity, digest, n)
            saved = [bounds for bounds in directory.saved() if bounds[1] <= n]
        else:
            manifest = {"name": name, "function": identity, "items_digest": digest, "n_items": n,
                        "stack": stack, "created": stamp(), "bounds": None, "seconds_per_item": None}
            directory.create(manifest)
    resumed = bool(manifest.get("created")) and bool(saved or manifest.get("bounds"))
    per_item = float(manifest.get("seconds_per_item") or 0.0)
    run.estimate_key = estimate_key(identity, items)
    remembered = remembered_estimate(client, run.estimate_key)

    def submit(low: int, high: int) -> Future:
        task = ChunkTask(name, fn, items[low:high], low, stack, directory, per_item * (high - low), item_timeout)
        future = client.submit(run_chunk, task, *extra, key=f"{name}-{start_id}-{len(run.futures)}", pure=False)
        run.bounds.append((low, high))
        run.futures.append(future)
        return future

    try:
        if resumed:
            for bounds in saved:
                run.bounds.append(bounds)
                run.futures.append(None)
            for low, high in missing_ranges(n, saved):
                for chunk in plan(low, high, chunk_size, threads, per_item or TARGET_CHUNK_SECONDS / 100):
                    submit(*chunk)
        else:
            position = 0
            if not chunk_size:  # measured by an earlier run of this function (no warm-up), or probed now
                position, per_item = (0, remembered) if remembered else probe(client, submit, n, threads)
            for low, high in plan(position, n, chunk_size, threads, per_item):
                submit(low, high)
        order = sorted(range(len(run.bounds)), key=lambda i: run.bounds[i])
        run.bounds[:] = [run.bounds[i] for i in order]
        run.futures[:] = [run.futures[i] for i in order]
        run.start_id, run.seconds_per_item = start_id, per_item
        if directory is not None:
            directory.write_manifest({**manifest, "bounds": run.bounds,
                                      "seconds_per_item": per_item or manifest.get("seconds_per_item")})
        client.publish_dataset(run.record(), name=name, override=True)  # replaces this start's claim
    except BaseException:
        client.cancel([f for f in run.futures if f is not None])
        raise
    return run


_NOTED: set[tuple[int, str]] = set()  # (client, scheduler) pairs whose scheduler has the death notes


def note_deaths(client: Client) -> None:
    """Have the scheduler note, in a task's annotations, the workers that died running it (once per
    client and scheduler): a chunk's retry then learns which item ended its worker
    (:mod:`hpcbridge.cluster.attempts`). A scheduler that cannot take the plugin runs the map
    without it: a worker death then fails its chunk as a whole, as distributed does."""
    scheduler = str(getattr(client, "_scheduler_identity", {}).get("id") or getattr(client.scheduler, "address", ""))
    if (id(client), scheduler) in _NOTED:
        return
    try:
        client.run_on_scheduler(install_death_notes)
    except Exception:  # noqa: BLE001 -- an hpcbridge-less or older scheduler
        return
    _NOTED.add((id(client), scheduler))


def _claim(client: Client, name: str) -> str:
    """Take ``name`` on the cluster for one start of a run, before anything is submitted; returns the
    start's id, which every task key of the run carries.

    Publishing without ``override`` is atomic on the scheduler: of two clients that start runs of
    one name at once, exactly one gets it, and the other is refused before it submits a task or
    touches the run directory. The id keeps two starts' task keys apart even so.
    """
    start_id = secrets.token_hex(4)
    try:
        client.publish_dataset({RUN_MARKER: 1, CLAIM: start_id}, name=name)
    except KeyError:
        raise KeyError(f"a run or dataset named {name!r} already exists on this cluster (another client may "
                       "be starting it); collect or release it first, or choose another name") from None
    return start_id


def _unclaim(client: Client, name: str, start_id: str) -> None:
    """Give ``name`` back after a start that failed, unless it no longer holds this start's claim."""
    try:
        record = client.get_dataset(name)
        if isinstance(record, dict) and record.get(CLAIM) == start_id:
            client.unpublish_dataset(name)
    except Exception:  # the scheduler is gone or the name was released: nothing to give back
        pass


def _check_same_run(name: str, directory: RunDirectory, manifest: dict[str, Any], identity: str, digest: str,
                    n: int) -> None:
    """Refuse to resume a run on disk that mapped another function or other items."""
    if manifest.get("function") != identity:
        raise RunMismatchError(
            f"name: {name!r} is a run in {directory.path} of function {manifest.get('function')}, not of "
            f"{identity}; choose another name, or delete that folder to start the run afresh")
    if manifest.get("n_items") != n or manifest.get("items_digest") != digest:
        raise RunMismatchError(
            f"name: {name!r} is a run in {directory.path} over other items ({manifest.get('n_items')} items, "
            f"digest {manifest.get('items_digest')}; these are {n} items, digest {digest}); choose another "
            "name, or delete that folder to start the run afresh")


def release(client: Client, name: str) -> bool:
    """Let the cluster forget run ``name`` and its results; True if some of its chunks had not finished."""
    try:
        record = client.get_dataset(name)
    except KeyError:
        raise KeyError(f"no run named {name!r} on this cluster") from None
    client.unpublish_dataset(name)
    futures = futures_in(record)
    unfinished = any(not future.done() for future in futures)
    client.cancel(futures)
    return unfinished


def futures_in(record: Any) -> list[Future]:
    if not isinstance(record, dict) or RUN_MARKER not in record:
        return []
    return [future for future in record.get("futures", ()) if future is not None]


def reattach(client: Client, name: str) -> Run:
    """The run published as ``name``, with futures bound to ``client``."""
    try:
        return Run.from_record(name, client.get_dataset(name))
    except KeyError:
        raise KeyError(f"no run named {name!r} on this cluster (runs: {client.list_datasets()})") from None


def rebind(client: Client, run: Run) -> None:
    """Give ``run`` futures of ``client`` (a new client attached to the same scheduler), by its name.

    Futures of a client that was closed wait for nothing; the scheduler holds the run under its
    name. A run the scheduler does not hold (or holds with other chunks) keeps no futures: it is
    then collected from its run directory.
    """
    run.futures = _fresh_futures(client, run) or [None] * len(run.bounds)


def _fresh_futures(client: Client, run: Run) -> list[Future | None] | None:
    """The run's futures as the scheduler's record under its name holds them, bound to ``client``;
    None when it holds no such run (released meanwhile, other chunks) or went away again (a
    closed comm or a timeout: OSError)."""
    try:
        fresh = reattach(client, run.name)
    except (KeyError, OSError):
        return None
    return fresh.futures if fresh.bounds == run.bounds else None


def _cancelled_by_reconnect(future: Future) -> bool:
    error = getattr(future._state, "exception", None) if future.status == "cancelled" else None
    return getattr(error, "reason", None) == "scheduler-connection-lost"


def refresh_after_reconnect(client: Client, run: Run) -> bool:
    """Take the run's futures anew from the scheduler after the client reconnected to it; True if taken.

    A client whose connection broke (the scheduler's node cut off for half a minute) cancels every
    future it holds when it reconnects ("scheduler-connection-lost"), but the scheduler still holds
    the run under its name, and keeps computing it: the published record has live futures.
    """
    if client.status != "running" or not any(_cancelled_by_reconnect(f) for f in run.futures if f is not None):
        return False
    fresh = _fresh_futures(client, run)
    if fresh is None:
        return False
    run.futures = fresh
    return True
