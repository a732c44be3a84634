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

import asyncio
import functools
import os
import secrets
import shutil
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from distributed import Client, Future

from hpcbridge.client import arguments, run_records
from hpcbridge.client.planning import (
    TARGET_CHUNK_SECONDS,
    estimate_key,
    plan,
    plan_spread,
    probe,
    remembered_estimate,
)
from hpcbridge.cluster import broadcasts
from hpcbridge.cluster.attempts import install_death_notes
from hpcbridge.cluster.chunks import NOT_SAVED_TOPIC, ChunkTask, run_chunk
from hpcbridge.rundir import (
    RunDirectory,
    RunDirectoryError,
    RunDirectoryWarning,
    RunMismatchError,
    covering,
    describe_ranges,
    failure_text,
    function_identity,
    items_digest,
    missing_ranges,
    stamp,
)

RUN_MARKER = "hpcbridge-run"


CLAIM = "starting"  # a published record with this key is a name taken by a run that is being started
# How long a start that was interrupted (Ctrl-C) or failed waits for the chunks it had sent that are
# already running (Dask cannot stop a task while it runs) before it says so and returns.
ABANDON_WAIT_SECONDS = 30.0


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


class SaveErrors(list):
    """Why workers could not save chunks of a run in ``directory`` (a list that a weak reference can name)."""

    directory: str | None = None


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
    # The chunks (bounds) the cluster has finished, noted as they finish for a run this client
    # started: a loss then says how many items were computed, also those lost with the cluster.
    computed: set[tuple[int, int]] = field(default_factory=set, repr=False, compare=False)
    # Why workers could not save chunks of this run, as they told the scheduler (an event each, passed
    # on to this client as they happen): said at gather, and in the error of a run lost since.
    save_errors: SaveErrors = field(default_factory=SaveErrors, repr=False, compare=False)
    # The id in the run's task keys and the planned seconds per item (set by start): chunks handed
    # off from a stuck one get keys of the same start (see hpcbridge.client.collect).
    start_id: str | None = field(default=None, repr=False, compare=False)
    seconds_per_item: float = field(default=0.0, repr=False, compare=False)
    # The Dask resources every chunk of the run needs ({"GPU": 1}): chunks handed on keep them.
    resources: dict[str, float] | None = field(default=None, repr=False, compare=False)

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

    def _repr_html_(self) -> str:
        """A notebook's view: the name, the function, items done of n (a bar), chunks done, where it is saved."""
        from html import escape

        done = self.done_items()
        chunks = sum(1 for future in self.futures if future is None or future.done())
        rows = [("Function", escape(self.function or "a function")),
                ("Items", f'{done} of {self.n_items} done <progress value="{done}" max="{max(self.n_items, 1)}">'
                          "</progress>"),
                ("Chunks", f"{chunks} of {len(self.bounds)} done"),
                ("Saved in", escape(self.directory) if self.directory else "memory only")]
        cells = "".join(f'<tr><th style="text-align: left;">{name}</th><td style="text-align: left;">{value}</td></tr>'
                        for name, value in rows)
        return f"<div><strong>Run</strong> <code>{escape(self.name)}</code><table>{cells}</table></div>"

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
                "function": self.function, "directory": self.directory, "resources": self.resources}

    @classmethod
    def from_record(cls, name: str, record: Any) -> Run:
        if not isinstance(record, dict) or RUN_MARKER not in record:
            raise KeyError(f"{name!r} is a published dataset, but not an hpcbridge run")
        if CLAIM in record:
            raise KeyError(f"run {name!r} is being started by a client and has no chunks yet; try again "
                           "once its map has returned")
        run = cls(name, record["n_items"], [tuple(b) for b in record["bounds"]], list(record["futures"]),
                  record.get("function", ""), record.get("directory"))
        run.resources = record.get("resources")
        return run

    @classmethod
    def from_disk(cls, directory: RunDirectory) -> Run:
        """A run as its run directory holds it (no cluster): every saved chunk, no futures."""
        manifest = directory.manifest()
        saved = directory.saved()
        n_items = int(manifest.get("n_items", saved[-1][1] if saved else 0))
        planned = [(int(low), int(high)) for low, high in manifest.get("bounds") or ()]
        bounds = planned if planned and set(saved) <= set(planned) else covering(saved)
        return cls(directory.name, n_items, bounds, [None] * len(bounds), str(manifest.get("function", "")),
                   directory.path)


def new_run_name() -> str:
    """A run name that is unique and sorts by time: ``run-20260101-120000-1a2b3c``."""
    return f"run-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def start(client: Client, fn: Callable[..., Any], items: Sequence[Any], extra: Sequence[Any] = (),
          name: str | None = None, stack: bool = False, chunk_size: int | None = None,
          root: str | None = None, item_timeout: float | None = None,
          resources: dict[str, float] | None = None) -> Run:
    """Submit ``fn(item, *extra)`` for every item as chunks, and publish the run under ``name``.

    With a run directory root (``root``), finished chunks are saved under ``root/name``; when that
    folder already holds a run of the same function and items, only the items it lacks are
    submitted (the run resumes); a different function or items raise :class:`RunMismatchError`.
    An item that runs longer than ``item_timeout`` seconds is ended (by ending its worker process)
    and fails with :class:`ItemTimedOut`. With ``resources`` (``{"GPU": 1}``) every chunk runs only on
    workers that offer them, and the chunks are planned for those workers' threads;
    :class:`~hpcbridge.client.arguments.ArgumentError` when no worker offers them (a map that would wait for ever).
    """
    name = name or new_run_name()
    threads_by_worker = threads_offering(client, resources)
    start_id = _claim(client, name)
    try:
        note_deaths(client)
        return _start_claimed(client, fn, items, extra, name, start_id, stack, chunk_size, root, item_timeout,
                              resources, threads_by_worker)
    except BaseException:
        _unclaim(client, name, start_id)
        raise


def _start_claimed(client: Client, fn: Callable[..., Any], items: Sequence[Any], extra: Sequence[Any], name: str,
                   start_id: str, stack: bool, chunk_size: int | None, root: str | None,
                   item_timeout: float | None = None, resources: dict[str, float] | None = None,
                   nthreads: dict[str, int] | None = None) -> Run:
    """:func:`start` once ``name`` is claimed: check the run directory, plan, submit, publish."""
    if not (hasattr(items, "__len__") and hasattr(items, "__getitem__")):
        items = list(items)
    n = len(items)
    nthreads = client.nthreads() if nthreads is None else nthreads
    threads, workers = max(1, sum(nthreads.values())), max(1, len(nthreads))
    extra = tuple(extra)
    directory = RunDirectory.under(root, name) if root else None
    made = directory is not None and not os.path.exists(directory.path)  # removed again if this start fails
    run = Run(name, n, [], [], getattr(fn, "__qualname__", repr(fn)), directory.path if directory else None)
    run.resources = resources
    manifest: dict[str, Any] = {}
    saved: list[tuple[int, int]] = []
    identity = function_identity(fn)
    sent = [0]  # chunks whose sending began: one interrupted inside client.map may have left without futures here
    per_item = 0.0

    def submit(chunks: list[tuple[int, int]], threads: int = 1) -> list[Future]:
        """Submit ``chunks`` as one graph: one message, one update on the scheduler. One ``client.submit``
        each cost the scheduler an update per chunk (263 chunks at 256 threads: ~1 s before the map returned).
        ``threads``: how many threads of its worker each chunk may use (spread chunks)."""
        if not chunks:
            return []
        tasks = [ChunkTask(name, fn, items[low:high], low, stack, directory, per_item * (high - low),
                           item_timeout, threads)
                 for low, high in chunks]
        first = sent[0]
        keys = [f"{name}-{start_id}-{first + i}" for i in range(len(tasks))]
        sent[0] += len(tasks)  # counted before sending: Ctrl-C inside client.map can land after the graph left
        futures = client.map(run_chunk, tasks, *([value] * len(tasks) for value in extra), key=keys, pure=False,
                             resources=resources)
        run.bounds.extend(chunks)
        run.futures.extend(futures)
        note_when_computed(client, run, futures, chunks)
        return futures

    try:
        if directory is not None:
            digest = items_digest(items, [a for a in extra if not isinstance(a, broadcasts.Broadcast)])
            manifest, saved = _prepare_directory(directory, name, identity, digest, n, stack)
            _listen_for_failed_saves(client, run)
        resumed = bool(manifest.get("created")) and bool(saved or manifest.get("bounds"))
        per_item = float(manifest.get("seconds_per_item") or 0.0)
        run.estimate_key = estimate_key(identity, items)
        remembered = remembered_estimate(client, run.estimate_key)
        if resumed:
            for bounds in saved:
                run.bounds.append(bounds)
                run.futures.append(None)
            submit([chunk for low, high in missing_ranges(n, saved)
                    for chunk in plan(low, high, chunk_size, threads, per_item or TARGET_CHUNK_SECONDS / 100)])
        else:
            position = 0
            if not chunk_size:  # measured by an earlier run of this function (no warm-up), or probed now
                position, per_item = (0, remembered) if remembered else probe(client, submit, n, threads, workers)
            spread = None if chunk_size or resources else plan_spread(position, n, nthreads, per_item)
            if spread:
                submit(spread, max(nthreads.values()))
            else:
                submit(plan(position, n, chunk_size, threads, per_item))
        order = sorted(range(len(run.bounds)), key=lambda i: run.bounds[i])
        run.bounds[:] = [run.bounds[i] for i in order]
        run.futures[:] = [run.futures[i] for i in order]
        run.start_id, run.seconds_per_item = start_id, per_item
        if directory is not None:
            try:
                directory.write_manifest({**manifest, "bounds": run.bounds,
                                          "seconds_per_item": per_item or manifest.get("seconds_per_item")})
            except OSError as error:  # the run goes on: a resumed run finds its chunks without the bounds
                warnings.warn(f"run {name!r}: its planned chunks could not be written in {directory.path} "
                              f"({failure_text(error)}); "
                              "gather will say which chunks could not be saved either", RunDirectoryWarning,
                              stacklevel=4)
        client.publish_dataset(run.record(), name=name, override=True)  # replaces this start's claim
    except BaseException:  # an error, or Ctrl-C (KeyboardInterrupt) anywhere in here
        _abandon(client, name, start_id, sent[0], directory if made else None)
        raise
    return run


def threads_offering(client: Client, resources: dict[str, float] | None) -> dict[str, int] | None:
    """The threads of each worker that offers ``resources`` (None without them: every worker counts).

    :class:`~hpcbridge.client.arguments.ArgumentError` when none offers them: Dask would hold the
    run's tasks until such a worker came, which for a cluster of other workers is never.
    """
    if not resources:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    offering = {address: info["nthreads"] for address, info in workers.items()
                if all(info.get("resources", {}).get(name, 0) >= amount for name, amount in resources.items())}
    if not offering:
        offered = sorted({f"{name}={amount:g}" for info in workers.values()
                          for name, amount in info.get("resources", {}).items()})
        raise arguments.ArgumentError("resources", resources, f"resources some worker of the cluster offers; its "
                                      f"{len(workers)} workers offer {', '.join(offered) or 'none'} (GPU workers "
                                      "offer GPU: submit or join a job with --gpus-per-task)")
    return offering


def _prepare_directory(directory: RunDirectory, name: str, identity: str, digest: str, n: int,
                       stack: bool) -> tuple[dict[str, Any], list[tuple[int, int]]]:
    """The run folder's manifest (written now for a new run) and its saved chunks; refuses a folder that
    holds another run (:class:`RunMismatchError`) or cannot be written (:class:`RunDirectoryError`),
    before anything is submitted."""
    try:
        manifest = directory.manifest()
        if not manifest:
            manifest = {"name": name, "function": identity, "items_digest": digest, "n_items": n,
                        "stack": stack, "created": stamp(), "bounds": None, "seconds_per_item": None}
            directory.create(manifest)
            return manifest, []
        _check_same_run(name, directory, manifest, identity, digest, n)
        directory.write_manifest(manifest)  # as it is: a resumed run's folder must take its chunks too
        return manifest, [bounds for bounds in covering(directory.saved(verify=True)) if bounds[1] <= n]  # not run again
    except OSError as error:
        raise RunDirectoryError(directory.path, error) from None


def note_when_computed(client: Client, run: Run, futures: Sequence[Future], bounds: Sequence[tuple[int, int]]) -> None:
    """Add each chunk's bounds to ``run.computed`` as soon as its future finishes (on the client's loop, so
    it is noted also while nobody gathers, before a lost cluster cancels every future).

    One callback for them all: handing the loop one per future cost the client a write to its wake-up
    socket each (0.05 ms a chunk, most of what submitting a chunk cost)."""
    states = [(future._state, chunk) for future, chunk in zip(futures, bounds)]

    async def note(state: Any, chunk: tuple[int, int]) -> None:
        await state.wait()
        if state.status == "finished":
            run.computed.add(chunk)

    async def note_all() -> None:
        await asyncio.gather(*(note(state, chunk) for state, chunk in states))

    client.loop.add_callback(note_all)


# Per client: where to note the failed saves of its runs, by run name (see _listen_for_failed_saves).
_LISTENING: weakref.WeakKeyDictionary[Client, weakref.WeakValueDictionary[str, SaveErrors]] = (
    weakref.WeakKeyDictionary())
MAX_SAVE_ERRORS = 10  # reasons kept per run: the same failure, chunk after chunk, says nothing more


def _listen_for_failed_saves(client: Client, run: Run) -> None:
    """Have the scheduler pass on to ``client`` the events of workers that could not save a chunk, and note
    those of ``run`` in ``run.save_errors``: also when the cluster is gone by the time it is collected."""
    notes = _LISTENING.get(client)
    if notes is None:
        notes = _LISTENING[client] = weakref.WeakValueDictionary()
        client.subscribe_topic(NOT_SAVED_TOPIC, functools.partial(_note_failed_save, notes))
    run.save_errors.directory = run.directory
    notes[run.name] = run.save_errors  # kept while the run (or a bridge's record of it) holds it


def _note_failed_save(notes: weakref.WeakValueDictionary[str, SaveErrors], event: Any) -> None:
    """On the client's loop: one worker's event that it could not save a chunk (see :func:`run_chunk`)."""
    _, message = event
    errors = notes.get(message.get("run")) if isinstance(message, dict) else None
    if errors is None or message.get("directory") != errors.directory or len(errors) >= MAX_SAVE_ERRORS:
        return
    text = f"{message.get('error')} (on worker {message.get('worker')})"
    if text not in errors:
        errors.append(text)


def _abandon(client: Client, name: str, start_id: str, sent: int, made: RunDirectory | None) -> None:
    """Undo a start that failed or was interrupted: cancel every task it sent, wait (up to
    :data:`ABANDON_WAIT_SECONDS`) until no worker runs one any more, and remove the run folder it made.

    Tasks are cancelled by key, not by future: Ctrl-C inside ``client.map`` can land after the
    task was sent and before its future was kept. The cancel travels on the client's message stream
    behind the tasks it sent, so the scheduler never runs one after it. A chunk that was already
    running goes on until it ends (Dask cannot stop a running task); its result is dropped, and the
    folder is removed once it has ended, so it saves nothing there.
    """
    prefix = f"{name}-{start_id}-"
    try:
        if sent:
            client.cancel([Future(f"{prefix}{index}", client) for index in range(sent)], force=True)
            # Publishing waits until the scheduler has handled every message this client sent before
            # (distributed flushes the client's stream first): the tasks, then their cancel. Only
            # then can asking the scheduler and the workers what they hold tell that nothing is left.
            client.publish_dataset({RUN_MARKER: 1, CLAIM: start_id}, name=name, override=True)
            left = _wait_until_gone(client, prefix, ABANDON_WAIT_SECONDS)
            if left:
                warnings.warn(f"run {name!r} was stopped, but chunks of it still run on {', '.join(sorted(left))} "
                              f"after {ABANDON_WAIT_SECONDS:g} s (Dask cannot stop a task while it runs): their "
                              "results will be dropped when they end", stacklevel=4)
    finally:
        if made is not None:
            _remove_folder(made.path)


def _wait_until_gone(client: Client, prefix: str, timeout: float) -> list[str]:
    """Wait until neither the scheduler nor a worker holds a task whose key starts with ``prefix``;
    return the workers that still hold one after ``timeout`` seconds (none: all gone)."""
    deadline = time.monotonic() + timeout
    gone = 0
    while True:
        try:
            holding = sorted(worker for worker, keys in client.run(_worker_keys, prefix).items() if keys)
            gone = gone + 1 if not holding and not client.run_on_scheduler(_scheduler_keys, prefix) else 0
        except OSError:  # the cluster went away: nothing of this start runs there any more
            return []
        if gone == 2:  # twice in a row: a task and its cancel still on their way to a worker are not missed
            return []
        if time.monotonic() >= deadline:
            return holding
        time.sleep(0.05)


def _scheduler_keys(prefix: str, dask_scheduler: Any = None) -> list[str]:
    return [str(key) for key in dask_scheduler.tasks if str(key).startswith(prefix)]


def _worker_keys(prefix: str, dask_worker: Any = None) -> list[str]:
    """The worker's tasks whose key starts with ``prefix``, queued, running, or cancelled while running."""
    return [str(key) for key in dask_worker.state.tasks if str(key).startswith(prefix)]


def _remove_folder(path: str, attempts: int = 5) -> None:
    """Remove ``path`` and what is in it; a worker writing a chunk there at that moment (its temporary
    file appearing while the folder is emptied) is met by trying again."""
    for _ in range(attempts):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.05)


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
    """Give ``name`` back after a start that failed, unless it no longer holds this start's claim or run
    (interrupted just after publishing it, the record is this start's run)."""
    try:
        record = client.get_dataset(name)
        ours = isinstance(record, dict) and (record.get(CLAIM) == start_id or any(
            str(future.key).startswith(f"{name}-{start_id}-") for future in futures_in(record)))
        if ours:
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
    run_records.flush(client, name)  # a record still being sent would bring the run back after this
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
