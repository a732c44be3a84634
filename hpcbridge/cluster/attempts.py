"""What each chunk attempt is doing, readable after its worker process died, and what a retry makes of it.

A worker process that dies in an item (its nanny ended it for memory, ``os._exit``, a crash in
native code, a signal) takes the chunk's task with it, and distributed runs the task again on
another worker (``distributed.scheduler.allowed-failures``, default 3: up to 4 workers), where the
same item kills that worker too. To tell the retry which item it was, every chunk attempt keeps a
*slot*: a small file in node-local shared memory (``/dev/shm``), mapped into the worker process,
that outlives it. A first attempt writes one byte per block of :data:`BLOCK` items as the block
begins (a C call inside the C loop that calls the items: about 10 ns an item, no Python frame); a
process that ends by ``os._exit`` or SIGTERM (how a nanny ends a worker over its memory limit)
first notes exactly how many items it had taken and keeps what it computed in the run directory.
A retry notes every item, so a second death is always pinned on one.

A retry learns that its task's worker died from the scheduler: :class:`DeathNotes`, a scheduler
plugin, notes in the task's annotations which worker (its process id, nanny and host) was
running it when it died; the annotations travel with the task to its next worker. The retry
then asks the dead worker's nanny (:func:`death_report`, run in the nanny over distributed's own
connection) for the slots of that process and for what the nanny saw (its exit status, the
signal, or that the nanny ended it for exceeding its memory limit), and (:func:`investigate`)
fails the item with an error that names it and says the cause, without running it, when the
cause points at it (memory, an exit status, a crash signal) and it was the only item running in
that process, or when it was running at two deaths; it computes the rest, from what was kept.
Retries that run items which were running at a death not pinned on them take turns in their
process (:func:`apart`) and are not cut, so that a second death finds only the killer's retry in
such an item.

A chunk spread over its worker's threads (:mod:`hpcbridge.cluster.spread`) runs each thread as an
attempt of the chunk's task (``spread=True``), with a slot of that thread (reused from chunk to
chunk) in which it notes the item it is in before calling it and after; a retry reads every slot
of its task.

A thread per worker process (:class:`Watchdog`) looks at the running attempts twice a second:
it says which item each is on and for how long (:func:`active`), ends an item that runs past its
``item_timeout`` by ending the worker process (there is no other way to stop a Python thread;
the nanny starts a new one), after noting the item and keeping what the attempts in that process
had computed, and hands an item that runs far longer than its chunk's items were expected to
take out of the worker's thread pool (as ``secede`` does), so that the tasks queued behind it on
that worker run, and tells the scheduler (an event) so a client can take the rest of its chunk
elsewhere (:func:`cut`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import mmap
import operator
import os
import pickle
import secrets
import signal
import struct
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin

logger = logging.getLogger("hpcbridge.cluster.attempts")

ANNOTATION = "hpcbridge-died"  # the task annotation DeathNotes writes: the workers that died running it
LOST_ANNOTATION = "hpcbridge-lost"  # and this one on a task whose result was lost with the worker that held it
PLUGIN_NAME = "hpcbridge-death-notes"
STUCK_TOPIC = "hpcbridge-stuck"  # scheduler events: an item that has run far longer than expected

ITEM_TIMEOUT_EXIT = 124  # the exit status of a worker process ended for an item's timeout (as timeout(1) uses)
RELEASED_EXIT = 75  # the exit status of a worker process ended because a released run's item would not stop
ONE_WORKER_LIMIT = 2  # an item running when this many workers died is not run again (1 when it ran alone)
REPORT_WAIT = 10.0  # how long a retry waits for the dead worker's nanny to say what happened
CONNECT_TIMEOUT = 5.0  # a dead worker's nanny that does not take a connection this fast is not asked (its node is away)
ASK_TIMEOUT = REPORT_WAIT + 5.0  # the bound on every question a retry asks the nanny or the scheduler
TICK_SECONDS = 0.5  # how often the watchdog looks at the running attempts
STUCK_MIN_SECONDS = 5.0  # an item counts as stuck after this long, and
STUCK_FACTOR = 20.0  # after this many times the time its chunk's items are expected to take (or took),
STUCK_UNKNOWN_SECONDS = 60.0  # or, when nothing says what they take, after this long
STALE_SLOT_SECONDS = 24 * 3600  # slots of dead processes older than this are removed

# The slot: a fixed header, then one byte per block of items (per item on a retry), written before
# the block's first item (the item) is handed out.
_MAGIC = b"HPCBRID2"
_FIELDS = "qqqdqqqqq"  # state, cut, timed out, its seconds, saved, header length, ended, granule, taken
_STATE, _CUT, _TIMED_OUT, _TIMED_SECONDS, _SAVED, _JSON_LENGTH, _ENDED, _GRANULE, _TAKEN = range(8, 80, 8)
_JSON_AT = 128
HEADER = 4096
BLOCK = 64  # items per slot byte on a first attempt
_BLOCK_OF_TRUE = (True,) * BLOCK
RUNNING, LOOP_DONE = 0, 1
_ONE = (b"\x01",)


def _new_slot(size: int) -> tuple[Path, mmap.mmap]:
    """A new slot file of ``size`` bytes for this process, mapped."""
    path = slot_directory() / f"{os.getpid()}.{secrets.token_hex(6)}.slot"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.ftruncate(fd, size)
        return path, mmap.mmap(fd, size)
    finally:
        os.close(fd)


class _ThreadSlot:
    """A thread's slot for the spread chunks it takes part in, one after another; removed when the thread ends."""

    def __init__(self) -> None:
        self.path, self.map = _new_slot(HEADER)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.map.close()
        with contextlib.suppress(Exception):
            self.path.unlink()


_THREADS = threading.local()


def _thread_slot() -> _ThreadSlot:
    slot = getattr(_THREADS, "slot", None)
    if slot is None:
        slot = _THREADS.slot = _ThreadSlot()
    return slot


def slot_directory() -> Path:
    """The node-local folder of this user's slots (``/dev/shm`` when there is one), private to its owner."""
    base = Path(os.environ.get("HPCBRIDGE_SLOT_DIRECTORY") or
                ("/dev/shm" if os.access("/dev/shm", os.W_OK) else tempfile.gettempdir()))
    folder = base / f"hpcbridge-{os.getuid()}-attempts"
    folder.mkdir(mode=0o700, exist_ok=True)
    if folder.stat().st_uid != os.getuid():
        raise PermissionError(f"{folder} belongs to another user")
    return folder


class Attempt:
    """One run of one chunk task in this process: its slot, its place in the items, what it has computed.

    ``tracked(a, b)`` is the iterator over items ``a..b-1`` (chunk-relative) that notes them in the
    slot as they are taken: one byte per block of :data:`BLOCK` items on a first attempt (about
    10 ns an item), one byte per item on a retry (``exact``), which runs after a death and must pin
    the next one on an item. :meth:`fetched` is how many items have been taken, exactly (from the
    iterator; the item running is ``fetched() - 1``). An attempt whose slot cannot be made (no
    shared memory) still runs its items: a death in it then cannot be pinned on an item.
    """

    def __init__(self, key: str, run: str, start: int, items: Sequence[Any], extra: tuple[Any, ...] = (),
                 item_timeout: float | None = None, expected_per_item: float = 0.0, task: Any = None,
                 exact: bool = False, directory: Any = None, dask_worker: Any = None, spread: bool = False) -> None:
        self.key, self.run, self.start, self.items, self.extra = key, run, start, items, extra
        self.directory = directory  # the run directory (a RunDirectory), where computed items are kept
        self.item_timeout, self.expected_per_item, self.task = item_timeout, expected_per_item, task
        self.n = len(items)
        self.granule = 1 if exact else BLOCK
        self.values: list[Any] = []
        self.errors: dict[int, tuple] = {}
        self.data: Iterator[Any] | None = None  # the sequence iterator the loop takes items from (cut ends it)
        self.cut_at: int | None = None
        self.loop_done = False
        self.thread = threading.current_thread()
        # found through the task's context (the watchdog's thread has none), or given by a thread of a
        # spread chunk (hpcbridge.cluster.spread), which has none either
        self.dask_worker = dask_worker if dask_worker is not None else current_worker()
        self.worker = getattr(self.dask_worker, "address", None)
        self.seen = (-1, time.monotonic())  # (fetched, since when) as the watchdog last saw it
        self.loop_started: float | None = None  # when the first tracked item was handed out
        self.first_taken = 0  # items taken before it (kept from an earlier attempt, or skipped)
        self.seceded = self.stuck_said = self.timeout_said = False
        # A thread of a spread chunk (hpcbridge.cluster.spread): its items are not a run from the chunk's
        # start, so it notes in its slot the item it runs and the last it finished (note_item), keeps no values
        # for a retry, and its retry reads only which item it was in.
        self.spread = spread
        self.skip: dict[int, tuple] = {}  # items the chunk fails without running, by item index (a retry's verdict)
        self.apart = False  # a retry running its suspects apart from other retries (see apart()): not cut
        # a retry of a spread chunk: runs of items its threads computed, by first item (chunk-relative), not reached
        # yet (the loop takes them as they are); kept again with the values should this process end
        self.known: dict[int, tuple[list[Any], dict[int, tuple]]] = {}
        self.path: Path | None = None
        self.map: mmap.mmap | None = None
        try:
            self._open()
        except Exception as error:  # noqa: BLE001 -- no shared memory: the items still run
            logger.warning("hpcbridge: chunk %s..%s runs without a slot (%s): a worker death in it cannot be "
                           "pinned on an item", start, start + self.n - 1, error)
            self.path, self.map = None, None

    def _open(self) -> None:
        if self.spread:  # a thread of a spread chunk reuses its thread's slot: a file costs ~0.1 ms, x threads x chunks
            self.path, self.map = _thread_slot().path, _thread_slot().map
        else:
            self.path, self.map = _new_slot(HEADER + max(1, -(-self.n // self.granule)))
        header = json.dumps({"key": self.key, "run": self.run, "start": self.start, "n": self.n,
                             "pid": os.getpid(), "worker": self.worker, "started": time.time(),
                             "item_timeout": self.item_timeout}).encode()[:HEADER - _JSON_AT]
        self.map[0:8] = _MAGIC
        struct.pack_into(_FIELDS, self.map, 8, RUNNING, -1, -1, 0.0, -1, len(header), 0, self.granule,
                         0 if self.spread else -1)  # a spread thread notes each item's place: none yet
        self.map[_JSON_AT:_JSON_AT + len(header)] = header

    def tracked(self, low: int, high: int) -> Iterator[Any]:
        """The items ``low..high-1`` (chunk-relative), noted in the slot as they are taken (a first
        attempt, by blocks, always starts at 0)."""
        data = iter(self.items)
        if low:
            data.__setstate__(low)
        self.data = data
        if self.loop_started is None:
            self.loop_started, self.first_taken = time.monotonic(), low
        if self.cut_at is not None and self.cut_at < high:
            high = max(low, self.cut_at)
        taken = data if high >= self.n else itertools.islice(data, high - low)
        if self.map is None or self.spread:  # a spread thread notes its items itself (note_item)
            return iter(taken)
        self.map.seek(HEADER + low // self.granule)
        if self.granule == 1:
            marks = itertools.starmap(self.map.write, itertools.repeat(_ONE))
        else:  # a block's byte, then its items: mmap.write returns 1, and 1 * (True,) * BLOCK selects BLOCK items
            marks = itertools.chain.from_iterable(map(operator.mul, map(self.map.write, itertools.repeat(b"\x01")),
                                                      itertools.repeat(_BLOCK_OF_TRUE)))
        return itertools.compress(taken, marks)

    def advance(self, to: int) -> None:
        """Note items up to ``to`` (chunk-relative) as taken without running them (kept from before, or
        skipped): only a retry, with one byte per item, does that."""
        if self.map is not None and self.granule == 1:
            self.map.seek(HEADER)
            self.map.write(b"\x01" * to)

    def fetched(self) -> int:
        """How many items have been taken, exactly (the item running, if any, is the last of them)."""
        if self.cut_at is not None:
            return self.cut_at
        hint = getattr(self.data, "__length_hint__", None)
        return self.n - hint() if hint is not None else len(self.values)

    def cut(self) -> int | None:
        """Take no item after the one running; return how many items the attempt will have computed
        (None when its loop is over or it has taken every item already)."""
        if self.data is None or self.cut_at is not None or self.loop_done or not hasattr(self.data, "__setstate__"):
            return None
        fetched = self.fetched()
        if fetched >= self.n:
            return None
        self.data.__setstate__(self.n)  # the loop's next take finds nothing: a C call, atomic with the loop's
        self.cut_at = fetched
        if self.map is not None:
            struct.pack_into("q", self.map, _CUT, self.cut_at)
        return self.cut_at

    def finish_loop(self) -> None:
        self.loop_done = True
        if self.map is not None:
            struct.pack_into("q", self.map, _STATE, LOOP_DONE)

    def note_ended(self) -> None:
        """Note that hpcbridge ends this process on purpose (a released run's item would not stop)."""
        if self.map is not None:
            struct.pack_into("q", self.map, _ENDED, 1)

    def note_timeout(self, index: int, seconds: float) -> None:
        """Note that the item at ``index`` (chunk-relative) ran past the item timeout (before the process ends)."""
        if self.map is not None:
            struct.pack_into("qd", self.map, _TIMED_OUT, index, seconds)

    def note_item(self, position: int, running: bool) -> None:
        """A spread chunk's thread: the item at ``position`` (chunk-relative) begins (``running``) or ended."""
        if self.map is not None:
            struct.pack_into("q", self.map, _TAKEN if running else _SAVED, position + 1)

    def keep_computed(self) -> None:
        """Note exactly how many items this attempt had taken, and keep what it computed so far in the run
        directory for its retry (done when the process is about to end, and before a block where a
        worker was killed outright). Without a run directory (``save=False``) only the count is noted.
        A spread chunk's thread has noted its item as it went (:meth:`note_item`) and keeps nothing."""
        if self.map is None or self.spread:
            return
        taken = self.fetched() if not self.loop_done else -1
        done = -1
        if self.directory is not None:
            values = list(self.values)  # one C call: a consistent copy while the loop may still append
            errors = {i: e for i, e in list(self.errors.items()) if i - self.start < len(values)}
            later = [(low, *known) for low, known in sorted(dict(self.known).items()) if low >= len(values)]
            try:
                self.directory.keep("kept", self.start, self.start + self.n, self.key, (values, errors, later))
                done = len(values)
            except Exception as error:  # noqa: BLE001 -- not kept: the retry computes them again
                logger.warning("hpcbridge: could not keep chunk %s's computed items for its retry: %s", self.key, error)
        else:
            done = len(self.values)
        struct.pack_into("q", self.map, _TAKEN, taken)
        struct.pack_into("q", self.map, _SAVED, done)

    def close(self) -> None:
        """The attempt is over (the process goes on): remove its slot (a spread thread's stays for its thread's
        next attempt, its loop noted done)."""
        if self.spread:
            self.map = None
            return
        with contextlib.suppress(Exception):
            if self.map is not None:
                self.map.close()
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.map = None

    def describe(self) -> dict[str, Any]:
        """What it is doing now: the item it is on and for how long, and the seconds per item its loop has
        taken so far (for :func:`active`)."""
        fetched, since = self.seen
        now = self.fetched()
        if now != fetched:
            since = time.monotonic()
        index = self.start + now - 1 if 0 < now and not self.loop_done else None
        item = _short_repr(self.items[now - 1]) if index is not None else None
        taken = now - self.first_taken  # by this attempt's loop, the running one included
        per_item = (time.monotonic() - self.loop_started) / taken if self.loop_started is not None and taken > 0 else 0.0
        return {"key": self.key, "run": self.run, "start": self.start, "stop": self.start + self.n,
                "index": index, "item": item, "seconds": time.monotonic() - since if index is not None else 0.0,
                "per_item": per_item,
                "worker": self.worker, "pid": os.getpid(),
                "cut": None if self.cut_at is None else self.start + self.cut_at, "spread": self.spread}


# ---------------------------------------------------------------- the attempts running in this process

_ACTIVE: dict[int, Attempt] = {}
_LOCK = threading.Lock()
# The spread chunks running in this process (hpcbridge.cluster.spread), by task key: a released run's
# stop their handing out of blocks, a process that ends keeps what they computed (each has ``key``, ``run``,
# ``stop()`` and ``keep_computed()``).
_SPREADS: dict[str, Any] = {}


@contextlib.contextmanager
def spreading(key: str, spread: Any) -> Iterator[None]:
    """While a spread chunk runs in this process: :func:`stop_run` of its run stops its handing out of blocks."""
    _SPREADS[key] = spread
    try:
        yield
    finally:
        _SPREADS.pop(key, None)


# Retries that run items which were running at a death not pinned on them take turns in their process
# (apart()); see there.
_APART = threading.Lock()


@contextlib.contextmanager
def apart(attempt: Attempt) -> Iterator[None]:
    """While a retry runs items that were running when a worker process died, the death not pinned on them
    (many items ran in that process): no other such retry runs in this process.

    Why: an item running at two deaths is failed as their cause. The chunks that died together are
    retried together, each from where it was, so without turns an innocent chunk's retry is often in the
    very item it was in at the first death when the killer's retry ends the process again (seen: one to
    eight innocent items failed in most of 25 spread maps with one item calling ``os._exit``). Taking
    turns, the second death finds only the killer's retry in such an item. Nor is such a retry cut: the
    rest's new tasks would run its suspects as first attempts, where a killer is not named (an item
    that ends its worker ran 13 times).
    """
    attempt.apart = True
    with _APART:
        yield


def begin(attempt: Attempt) -> Attempt:
    with _LOCK:
        _ACTIVE[id(attempt)] = attempt
    Watchdog.ensure()
    _hook_exits()
    return attempt


def end(attempt: Attempt) -> None:
    with _LOCK:
        _ACTIVE.pop(id(attempt), None)
    attempt.close()


def running() -> list[Attempt]:
    with _LOCK:
        return list(_ACTIVE.values())


def active(run: str | None = None) -> list[dict[str, Any]]:
    """Worker side (``client.run``): the attempts of ``run`` (all when None) running here, with their item."""
    return [a.describe() for a in running() if run is None or a.run == run]


def cut(key: str) -> dict[str, Any] | None:
    """Worker side (``client.run``): stop the attempt of task ``key`` after its running item, and hand back the
    rest of its chunk: ``{"at": first item not computed here, "task": the chunk task of the rest, "extra": ...}``
    (None when it is not running here or has nothing left to hand back)."""
    for attempt in running():
        if attempt.key != key or attempt.spread:  # a thread of a spread chunk: its items are not the chunk's rest
            continue
        if attempt.apart or attempt.known:  # a retry that must run its suspects itself (a rest would run them as
            return None  # first attempts), or takes items its spread chunk's threads computed (a rest would compute them)
        at = attempt.cut()
        if at is None:
            return None
        if attempt.task is None:
            return {"at": attempt.start + at, "stop": attempt.start + attempt.n, "task": None, "extra": attempt.extra}
        return rest_of(attempt.task, attempt.extra, at, attempt.skip)
    return None


def rest_of(task: Any, extra: tuple[Any, ...], done: int,
            skip: dict[int, tuple] | None = None) -> dict[str, Any] | None:
    """What a chunk task (:class:`hpcbridge.cluster.chunks.ChunkTask`) that computed only its first ``done``
    items hands back for the rest: ``at`` (its first item not computed), ``stop``, ``task`` (the chunk
    task of the rest) and the run's ``extra`` arguments; None when it computed them all. The rest's task
    carries on the items in ``skip`` (by item index) that it holds: they fail again without running.

    A cut (:func:`cut`) answers the client that asked with this; the chunk's result carries it too,
    because that answer can be lost (it came after the client's bound on asking, or the client was
    interrupted or died meanwhile) while the chunk still stops at the cut.
    """
    n = len(task.items)
    if done >= n:
        return None
    per_item = task.expected_seconds / n if n else 0.0
    skip = {i: entry for i, entry in (skip or task.skip or {}).items() if i >= task.start + done} or None
    rest = dataclasses.replace(task, items=task.items[done:], start=task.start + done,  # new tasks, one thread each
                               expected_seconds=per_item * (n - done), threads=1, skip=skip)
    return {"at": task.start + done, "stop": task.start + n, "task": rest, "extra": tuple(extra)}


def cut_many(keys: list[str]) -> dict[str, dict[str, Any]]:
    """Worker side (``client.run``): :func:`cut` each of the tasks ``keys`` that runs here; their rests by key."""
    rests = {key: cut(key) for key in keys}
    return {key: rest for key, rest in rests.items() if rest is not None}


def stop_run(run: str) -> list[dict[str, Any]]:
    """Worker side (``client.run``): take no further item in the attempts of a released run; return those
    still in an item."""
    for other in list(_SPREADS.values()):
        if other.run == run:
            other.stop()
    left = []
    for attempt in running():
        if attempt.run == run:
            attempt.cut()
            described = attempt.describe()
            if described["index"] is not None:
                left.append(described)
    return left


_ENDING = threading.Event()  # set when this process keeps what it computed because it is about to end


def hold_if_ending() -> None:
    """In a spread chunk's thread, before an item and after it: when this process is about to end, wait for
    the end (take no further item; leave an item that ended since as running, its value not kept), so that
    what is kept and the slots say what ran as the end began: the retry runs only the items running then,
    and they count as running at that death (none alone just because the others were stopped)."""
    if _ENDING.is_set():
        threading.Event().wait()


def keep_all(attempts: Sequence[Attempt] | None = None) -> None:
    """Keep what every running attempt (or those given) and every spread chunk running here has computed (the
    process is about to end: spread chunks' threads take no further item)."""
    _ENDING.set()
    # Each on its own: one that fails (an attempt that ends meanwhile has its slot closed under it) must not
    # leave the others unkept (every chunk running in the process was computed again when that happened).
    for kept in [*(running() if attempts is None else attempts), *_SPREADS.values()]:
        try:
            kept.keep_computed()
        except Exception as error:  # noqa: BLE001 -- not kept: the retry computes them again
            logger.warning("hpcbridge: could not keep chunk %s's computed items for its retry: %s", kept.key, error)


_HOOKED = False


def _hook_exits() -> None:
    """Keep the running attempts' computed items when this process ends by ``os._exit`` or SIGTERM (how a
    nanny ends a worker over its memory limit): their retries then run only the items not computed.

    The process still ends as it would have, with the same status or signal, a few milliseconds
    later. Installed once per worker process; a SIGTERM handler someone else installed is left alone.
    """
    global _HOOKED
    if _HOOKED:
        return
    _HOOKED = True
    real_exit = os._exit

    def _exit(status: int) -> None:
        with contextlib.suppress(BaseException):
            keep_all()
        real_exit(status)

    _exit.__wrapped__ = real_exit  # type: ignore[attr-defined]
    os._exit = _exit
    worker = current_worker()
    if worker is not None:
        with contextlib.suppress(Exception):
            worker.loop.add_callback(_hook_sigterm)  # signal handlers are set in the main thread: the loop's


def _hook_sigterm() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        with contextlib.suppress(BaseException):
            keep_all()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def _real_exit(status: int) -> None:
    getattr(os._exit, "__wrapped__", os._exit)(status)


def end_for_release(run: str, dask_worker: Any = None) -> bool:
    """Worker side (``client.run``): end this worker process if an attempt of released run ``run`` is still in
    an item (its nanny starts a new one); True if it will end. The other attempts here keep what they
    computed and are not blamed: their retries compute only the rest."""
    if not _has_nanny(dask_worker):
        logger.warning("hpcbridge: an item of released run %r still runs here, and this worker has no nanny to "
                       "start it again: it is left running", run)
        return False
    busy = [a for a in running() if a.run == run and a.describe()["index"] is not None]
    if not busy:
        return False
    for attempt in running():
        attempt.note_ended()
    keep_all()
    logger.warning("hpcbridge: ending this worker process (pid %s) to stop item %s of released run %r",
                   os.getpid(), busy[0].describe()["index"], run)
    threading.Timer(0.2, _real_exit, (RELEASED_EXIT,)).start()  # after this answer has gone back
    return True


# ---------------------------------------------------------------- the watchdog

class Watchdog:
    """One thread per worker process: item timeouts, stuck items, what each attempt is on."""

    _thread: threading.Thread | None = None
    _lock = threading.Lock()

    @classmethod
    def ensure(cls) -> None:
        with cls._lock:
            if cls._thread is None or not cls._thread.is_alive():
                cls._thread = threading.Thread(target=cls._run, name="hpcbridge-watchdog", daemon=True)
                cls._thread.start()

    @classmethod
    def _run(cls) -> None:
        with contextlib.suppress(Exception):
            remove_stale_slots()
        while True:
            attempts = running()
            tick = TICK_SECONDS
            for attempt in attempts:
                if attempt.item_timeout:
                    tick = min(tick, max(0.05, attempt.item_timeout / 5))
            try:
                cls.look(attempts)
            except Exception:  # the watchdog must go on
                logger.exception("hpcbridge: the watchdog failed once")
            time.sleep(tick)

    @classmethod
    def look(cls, attempts: list[Attempt]) -> None:
        now = time.monotonic()
        for attempt in attempts:
            fetched = attempt.fetched()
            if fetched != attempt.seen[0]:
                attempt.seen = (fetched, now)
                continue
            if fetched == 0 or attempt.loop_done:
                continue
            seconds = now - attempt.seen[1]
            if attempt.item_timeout and seconds > attempt.item_timeout:
                if _has_nanny(attempt.dask_worker):
                    end_for_timeout(attempt, fetched - 1, seconds, attempts)
                elif not attempt.timeout_said:
                    attempt.timeout_said = True
                    logger.warning("hpcbridge: item %s of run %r has run past its item_timeout (%g s), but this worker "
                                   "has no nanny to start it again: it is not ended", attempt.start + fetched - 1,
                                   attempt.run, attempt.item_timeout)
            if seconds > stuck_after(attempt, fetched) and not attempt.stuck_said:
                attempt.stuck_said = True
                _stuck(attempt, fetched - 1, seconds)


def stuck_after(attempt: Attempt, fetched: int) -> float:
    """How long the attempt's running item may run before it counts as stuck: :data:`STUCK_FACTOR` times what
    an item was expected to take (the plan's measure) or, without one, what this attempt's items took."""
    expected = attempt.expected_per_item
    done = fetched - 1 - attempt.first_taken
    if not expected and done > 0 and attempt.loop_started is not None:
        expected = max(0.0, attempt.seen[1] - attempt.loop_started) / done
    if not expected:
        return STUCK_UNKNOWN_SECONDS
    return max(STUCK_MIN_SECONDS, STUCK_FACTOR * expected)


def end_for_timeout(attempt: Attempt, index: int, seconds: float, attempts: list[Attempt]) -> None:
    """End this worker process: its item ran past the item timeout (the nanny starts a new one; the
    task's retry reads the slot and fails the item with a timeout error)."""
    attempt.note_timeout(index, seconds)
    keep_all(attempts)
    logger.error("hpcbridge: item %s of run %r ran %.1f s, past its item_timeout of %g s: ending this worker "
                 "process (pid %s) to stop it", attempt.start + index, attempt.run, seconds, attempt.item_timeout,
                 os.getpid())
    for handler in logging.getLogger().handlers + logging.getLogger("distributed").handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    _real_exit(ITEM_TIMEOUT_EXIT)


def _stuck(attempt: Attempt, index: int, seconds: float) -> None:
    """An item runs far longer than expected: free its thread's place in the worker's pool, and say so.

    Not for a thread of a spread chunk: the chunk's other threads take its other items anyway, and a
    client handing off "the rest" of the chunk (the items after the one its retry is on, should the
    worker have died meanwhile) would hand the stuck item on too."""
    if attempt.spread:
        return
    attempt.seceded = _secede(attempt)
    worker = attempt.dask_worker
    if worker is not None:
        message = {"run": attempt.run, "key": attempt.key, "index": attempt.start + index,
                   "worker": attempt.worker, "seconds": round(seconds, 1)}
        with contextlib.suppress(Exception):
            worker.log_event(STUCK_TOPIC, message)


def _secede(attempt: Attempt) -> bool:
    """``distributed.secede()`` on behalf of the attempt's thread: the worker runs its next task in a new thread.

    The thread itself leaves the pool when its task ends (:func:`leave_pool_if_seceded`).
    """
    worker = attempt.dask_worker
    if worker is None:
        return False
    try:
        from distributed.threadpoolexecutor import threads_lock
        from distributed.worker_state_machine import SecedeEvent

        executor = worker.executors.get("default")
        with threads_lock:
            if attempt.thread not in executor._threads:
                return False
            executor._threads.remove(attempt.thread)
            executor._adjust_thread_count()
        worker.loop.add_callback(worker.handle_stimulus, SecedeEvent(
            key=attempt.key, compute_duration=0.0, stimulus_id=f"hpcbridge-stuck-{time.time()}"))
        return True
    except Exception as error:  # noqa: BLE001 -- another distributed: the tasks behind it wait
        logger.warning("hpcbridge: could not free the thread of stuck chunk %s: %s", attempt.key, error)
        return False


def leave_pool_if_seceded(attempt: Attempt) -> None:
    """In the attempt's own thread, at its end: a thread the watchdog took out of the pool leaves it now."""
    if attempt.seceded:
        with contextlib.suppress(Exception):
            from distributed.threadpoolexecutor import thread_state

            thread_state.proceed = False


# ---------------------------------------------------------------- after a death: the scheduler's notes

def install_death_notes(dask_scheduler: Any = None) -> bool:
    """Scheduler side (``run_on_scheduler``): add :class:`DeathNotes` once."""
    if PLUGIN_NAME not in dask_scheduler.plugins:
        plugin = DeathNotes()
        plugin.scheduler = dask_scheduler
        for address in dask_scheduler.workers:
            plugin.add_worker(dask_scheduler, address)
        dask_scheduler.add_plugin(plugin, name=PLUGIN_NAME)
    return True


class DeathNotes(SchedulerPlugin):
    """Notes in a task's annotations the worker that was running it when it died.

    The scheduler counts a task's worker deaths (``ts.suspicious``) and sends the task to another
    worker, but that worker is not told. Annotations travel with the task, so the note reaches it:
    the dead worker's address, process id, nanny and host. The scheduler says which worker it is
    removing, and which tasks it was running, in its ``remove-worker`` event, just before it sends
    those tasks elsewhere (a task a worker stole is told apart this way too). A task whose result
    was lost with the worker that held it (distributed computes it again) gets a note too
    (:data:`LOST_ANNOTATION`): its chunk was saved when it finished, and its next run reads it back
    (:mod:`hpcbridge.cluster.chunks`) instead of computing it again.
    """

    name = PLUGIN_NAME

    def __init__(self) -> None:
        self.scheduler: Any = None
        self.workers: dict[str, tuple[Any, Any, Any]] = {}  # address -> (pid, nanny, host)
        self.dying: dict[Any, str] = {}  # task key -> the worker that died running it, until it is sent on

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def add_worker(self, scheduler: Any = None, worker: str | None = None, **kwargs: Any) -> None:
        state = (scheduler or self.scheduler).workers.get(worker)
        if state is not None:
            self.workers[worker] = (state.pid, state.nanny, state.host)

    def remove_worker(self, scheduler: Any = None, worker: str | None = None, **kwargs: Any) -> None:
        self.workers.pop(worker, None)  # called after its tasks were sent on

    def log_event(self, topic: str, msg: Any) -> None:
        if topic == "all" and isinstance(msg, dict) and msg.get("action") == "remove-worker" \
                and not msg.get("expected"):
            for key in msg.get("processing-tasks") or ():
                self.dying[key] = msg.get("worker")
        if topic == "all" and isinstance(msg, dict) and msg.get("action") == "remove-worker":
            for key in msg.get("lost-computed-tasks") or ():  # logged before they are sent to compute again
                ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
                if ts is not None:
                    ts.annotations = {**(ts.annotations or {}), LOST_ANNOTATION: msg.get("worker")}

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if start != "processing" or key not in self.dying:
            return
        address = self.dying.pop(key)
        ts = self.scheduler.tasks.get(key) if self.scheduler is not None else None
        if ts is None:
            return
        pid, nanny, host = self.workers.get(address, (None, None, None))
        died = [*(ts.annotations or {}).get(ANNOTATION, ()),
                {"worker": address, "pid": pid, "nanny": nanny, "host": host, "time": time.time()}]
        ts.annotations = {**(ts.annotations or {}), ANNOTATION: died}  # a new dict: it may be shared


def previous_deaths() -> list[dict[str, Any]]:
    """In a task: the workers that died while running this task before (its annotation), oldest first."""
    return list(_annotation(ANNOTATION) or ())


def result_was_lost() -> bool:
    """In a task: True when it ran to its end before, and its result was lost with the worker that held it."""
    return bool(_annotation(LOST_ANNOTATION))


def _annotation(name: str) -> Any:
    """The current task's annotation ``name`` (None when not in a task or not annotated)."""
    worker = current_worker()
    if worker is None:
        return None
    try:
        key = worker.get_current_task()
        state = worker.state.tasks.get(key)
        return (getattr(state, "annotations", None) or {}).get(name)
    except Exception:  # noqa: BLE001 -- not in a task
        return None


def current_key() -> str | None:
    worker = current_worker()
    if worker is None:
        return None
    with contextlib.suppress(Exception):
        return worker.get_current_task()
    return None


# ---------------------------------------------------------------- after a death: the nanny's word and the slots

def read_slots(pid: int) -> list[dict[str, Any]]:
    """The slots process ``pid`` left on this node: what each attempt of it had done when it ended."""
    found = []
    try:
        paths = sorted(slot_directory().glob(f"{pid}.*.slot"))
    except OSError:
        return []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if len(data) < HEADER or data[:8] != _MAGIC:
            continue
        state, cut_at, timed_out, timed_seconds, saved, length, ended, granule, taken = struct.unpack_from(
            _FIELDS, data, 8)
        try:
            header = json.loads(data[_JSON_AT:_JSON_AT + length])
        except ValueError:
            continue
        n = int(header.get("n", 0))
        marks = max(1, -(-n // max(1, granule)))
        zero = data.find(b"\x00", HEADER, HEADER + marks)
        blocks = marks if zero < 0 else zero - HEADER
        # The items taken: one byte an item on a retry; on a first attempt, exactly when the process
        # kept its values as it ended, else somewhere in the last block begun.
        if granule == 1:
            low = high = blocks
        elif taken >= 0:
            low = high = taken
        else:
            low, high = max(0, blocks - 1) * granule + min(1, blocks), min(n, blocks * granule)
        header.update(fetched=(low, high), loop_done=state == LOOP_DONE, cut=None if cut_at < 0 else cut_at,
                      timed_out=None if timed_out < 0 else timed_out, timed_seconds=timed_seconds,
                      saved=None if saved < 0 else saved, ended=bool(ended), path=str(path))
        found.append(header)
    return found


async def death_report(pid: int, wait: float = REPORT_WAIT, dask_worker: Any = None) -> dict[str, Any]:
    """Nanny side (distributed's ``run``): what this nanny saw of its worker process ``pid``'s end, and its slots.

    Waits up to ``wait`` s for the nanny to notice the end (it logs the exit status or signal).
    """
    nanny = dask_worker
    deadline = time.monotonic() + wait
    marker = f"Worker process {pid} "
    while True:
        lines = [message for _, message in nanny.get_logs() if str(pid) in message]
        process = getattr(getattr(nanny, "process", None), "process", None)
        restarted = process is not None and getattr(process, "pid", None) not in (None, pid)
        if any(marker in line for line in lines) or restarted or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    manager = getattr(nanny, "memory_manager", None)
    return {"lines": list(reversed(lines)), "restarted": restarted, "memory_limit": getattr(manager, "memory_limit", None),
            "terminate": getattr(manager, "memory_terminate_fraction", None), "slots": read_slots(pid),
            "address": getattr(nanny, "address", None)}


def _ask_about(death: dict[str, Any]) -> dict[str, Any] | None:
    """In a task: the dead worker's nanny's :func:`death_report` (None when it cannot be asked), with the
    memory it saw when it ended the process for memory (the scheduler's ``worker-restart-memory`` event)."""
    worker = current_worker()
    if worker is None:
        return None
    from distributed.utils import sync

    pid = death.get("pid")

    async def ask() -> dict[str, Any] | None:
        report = None
        if death.get("nanny"):
            from distributed.core import rpc

            async with rpc(death["nanny"], timeout=CONNECT_TIMEOUT, connection_args=worker.connection_args) as nanny:
                answer = await asyncio.wait_for(nanny.run(function=pickle.dumps(death_report),
                                                          args=pickle.dumps((pid,))), ASK_TIMEOUT)
            if isinstance(answer, dict) and answer.get("status") == "OK":
                report = answer["result"]
        if report is None:
            if death.get("host") != _host():
                return None
            report = {"lines": [], "memory_limit": None, "terminate": None, "slots": read_slots(pid),
                      "address": None}
        if any("memory budget" in line for line in report["lines"]):
            with contextlib.suppress(Exception):
                events = await asyncio.wait_for(worker.scheduler.events(topic="worker-restart-memory"), ASK_TIMEOUT)
                for _, message in events or ():
                    if isinstance(message, dict) and message.get("pid") == pid:
                        report["rss"] = message.get("rss")
        return report

    try:
        return sync(worker.loop, ask)
    except Exception as error:  # noqa: BLE001 -- the nanny's node is gone too: nothing to pin on an item
        logger.warning("hpcbridge: could not ask the nanny of dead worker %s (pid %s): %s", death.get("worker"),
                       pid, error)
        return None


class Verdict:
    """What a retry does after its task's worker(s) died: items to fail without running, where to stop,
    what was kept."""

    def __init__(self) -> None:
        self.skip: dict[int, tuple[str, str]] = {}  # chunk-relative index -> (error, details)
        self.where: dict[int, str] = {}  # chunk-relative index -> the worker it died on
        self.stop: int | None = None  # chunk-relative: the chunk was cut there (the rest went elsewhere)
        self.kept: tuple[list[Any], dict[int, tuple]] | None = None  # values and errors computed before a timeout
        # chunk-relative first item -> the values and errors of a run of items computed after the kept ones (a
        # spread chunk's threads computed them before the first gap was filled)
        self.known: dict[int, tuple[list[Any], dict[int, tuple]]] = {}
        self.suspect: int | None = None  # chunk-relative: a hard kill happened in the block from here
        # chunk-relative: items running at a death that was not pinned on them (another item may have caused it)
        self.suspects: set[int] = set()

    def __bool__(self) -> bool:
        return bool(self.skip) or self.stop is not None or self.kept is not None or self.suspect is not None


def investigate(key: str, start: int, deaths: list[dict[str, Any]], ask: Any = None,
                kept: Any = None) -> Verdict:
    """What the deaths of the workers that ran task ``key`` before say about its items (see the module).

    ``ask(death)`` gives the dead worker's report (default: its nanny's :func:`death_report`);
    ``kept()`` what the task's attempts kept in the run directory (None when nothing).
    """
    ask = ask or _ask_about
    verdict = Verdict()
    if deaths and kept is not None:
        found = kept()  # the last attempt that kept anything went furthest: it resumed from the ones before
        if found is not None:
            values, errors, *later = found  # a spread chunk's also has the runs computed after its first gap
            verdict.kept = (list(values), dict(errors))
            verdict.known = {low: (list(vals), dict(errs)) for low, vals, errs in (later[0] if later else ())}
    suspects: dict[int, list[str]] = {}
    for death in deaths:
        report = ask(death)
        if report is None:
            continue
        slots = report.get("slots") or []
        # One slot per attempt of ours that the process ran: a chunk's, or each thread's of a spread chunk.
        ours = [s for s in slots if s.get("key") == key]
        for slot in ours:
            if slot.get("cut") is not None:
                verdict.stop = slot["cut"] if verdict.stop is None else min(verdict.stop, slot["cut"])
            timed = slot.get("timed_out")
            if timed is not None:
                limit = slot.get("item_timeout")
                verdict.skip[timed] = (
                    f"ItemTimeout: it ran longer than item_timeout={limit:g} s on {death.get('worker')} (it was stopped "
                    f"after {slot.get('timed_seconds', 0):.1f} s): hpcbridge ended that worker process "
                    f"(pid {death.get('pid')}) to stop it, and its nanny started a new one",
                    "no traceback: the item was stopped by ending its worker process")
                verdict.where[timed] = death.get("worker") or "a worker"
        if any(s.get("timed_out") is not None or s.get("ended") for s in slots):
            continue  # its process was ended on purpose (an item's timeout, a released run): no other blame
        for slot in ours:
            if not _in_item(slot):
                continue  # it died before its first item, between two, or after its last: no item to pin it on
            cause, points = _cause(death, report)
            low, high = slot["fetched"]
            if low != high:  # a hard kill (SIGKILL, a crash) in a first attempt: somewhere in a block; the
                # retry notes each item (and keeps what it computed before that block) to pin the next death
                verdict.suspect = low - 1 if verdict.suspect is None else min(verdict.suspect, low - 1)
                for index in range(low - 1, high):
                    suspects.setdefault(index, []).append(cause)
                continue
            index = low - 1
            alone = not any(other is not slot and _in_item(other) for other in slots)
            suspects.setdefault(index, []).append(cause)
            times = len(suspects[index])
            if alone and points or times >= ONE_WORKER_LIMIT:
                why = ("it was the only item running in that process" if times == 1 else
                       f"it was running each of the {times} times a worker process died")
                allowed = _allowed_failures()
                verdict.skip[index] = (
                    f"WorkerDied: {cause}. It is not run again: {why} (hpcbridge runs an item whose worker process died "
                    f"on a second worker only when the death could not be pinned on it, and never on a third; "
                    f"distributed alone would try it on up to {allowed + 1} workers: allowed-failures={allowed})",
                    "no traceback: the worker process died in this item\n" + "\n".join(report.get("lines") or ()))
                verdict.where[index] = death.get("worker") or "a worker"
    verdict.suspects = {i for i in suspects if i not in verdict.skip}
    if verdict.stop is not None:
        verdict.skip = {i: e for i, e in verdict.skip.items() if i < verdict.stop}
        verdict.suspects = {i for i in verdict.suspects if i < verdict.stop}
    return verdict


def _in_item(slot: dict[str, Any]) -> bool:
    """Whether the attempt a slot describes was (or may have been) in an item when its process ended."""
    low, high = slot.get("fetched") or (0, 0)
    if slot.get("loop_done") or high == 0:
        return False
    return low != high or slot.get("saved") is None or slot["saved"] < low


# Signals with which a process ends by itself, from its own code (a crash in native code, abort()):
# the item running alone in it is the cause. SIGTERM, SIGKILL and the like come from outside (a
# cancelled job step, an administrator, the kernel's out-of-memory killer): an item is blamed for
# them only when it was running at two deaths.
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGSYS,
                  signal.SIGTRAP}


def _cause(death: dict[str, Any], report: dict[str, Any]) -> tuple[str, bool]:
    """The death in words, as the nanny saw it, and whether it points at the item running (the nanny ended
    the process for memory, the process exited by itself, or crashed) rather than at something outside."""
    pid, where = death.get("pid"), death.get("worker")
    lines = report.get("lines") or []
    process = f"the worker process running it (pid {pid} on {where})"
    if any("memory budget" in line for line in lines):
        limit, fraction = report.get("memory_limit"), report.get("terminate") or 0.95
        reached = report.get("rss")
        reached_words = f"it reached {_mib(reached)}, over" if reached else "it went over"
        limit_words = f"{fraction * 100:.0f} % of the worker's {_mib(limit)} limit" if limit else "its limit"
        return (f"{process} was ended by its nanny for memory: {reached_words} {limit_words} "
                "(distributed.worker.memory.terminate)"), True
    for line in lines:
        if f"Worker process {pid} exited with status" in line:
            return f"{process} exited with status {line.rsplit(' ', 1)[-1]}", True
        if f"Worker process {pid} was killed by signal" in line:
            number = line.rsplit(" ", 1)[-1]
            crash = number.isdigit() and int(number) in {int(s) for s in _CRASH_SIGNALS}
            return f"{process} was killed by signal {number} ({_signal_name(number)})", crash
        if f"Worker process {pid} was killed by unknown signal" in line:
            return f"{process} was killed by an unknown signal", False
    if report.get("restarted"):
        return f"{process} exited with status 0", True
    if report.get("address") is None:
        return f"{process} ended; no nanny watched it, so nothing says why", False
    return f"{process} ended; its nanny did not say why within {REPORT_WAIT:g} s", False


def _signal_name(number: str) -> str:
    try:
        name = signal.Signals(int(number)).name
    except ValueError:
        return "unknown"
    if name == "SIGKILL":
        return "SIGKILL: e.g. the kernel's out-of-memory killer, or kill -9"
    return name


def _mib(nbytes: Any) -> str:
    return f"{float(nbytes) / 2**20:.0f} MiB" if nbytes else "?"


def _allowed_failures() -> int:
    try:
        import dask

        return int(dask.config.get("distributed.scheduler.allowed-failures"))
    except Exception:  # noqa: BLE001
        return 3


# ---------------------------------------------------------------- small helpers

def current_worker() -> Any:
    """The Dask worker of the task this thread runs (None outside one)."""
    try:
        from distributed import get_worker

        return get_worker()
    except Exception:  # noqa: BLE001 -- not on a worker (a test calling run_chunk, the local executor)
        return None


def _has_nanny(worker: Any) -> bool:
    """Whether a nanny watches this worker (it starts a new process when this one ends). Without one (dask-mpi's
    ranks), ending the process would lose the worker, or the whole MPI job: item timeouts are not enforced."""
    return worker is not None and getattr(worker, "nanny", None) is not None


def _worker_address() -> str | None:
    worker = current_worker()
    return getattr(worker, "address", None) if worker is not None else None


def _host() -> str | None:
    worker = current_worker()
    if worker is None:
        return None
    try:
        from distributed.utils import get_address_host

        return get_address_host(worker.address)
    except Exception:  # noqa: BLE001
        return None


def _short_repr(item: Any, limit: int = 300) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def item_error(item: Any, error: BaseException | None) -> tuple[str, str, str]:
    """A failing item's entry in a chunk's errors: the item's repr, the error in words, the traceback (call it in
    the ``except`` clause). ``error`` None: the function raised StopIteration, which ends a ``map`` quietly."""
    if error is None:
        return _short_repr(item), "RuntimeError: the function raised StopIteration", ""
    if isinstance(error, SystemExit):
        words = (f"SystemExit: the item called sys.exit({error.code!r}), which fails this item only "
                 "(it would end the worker process)")
    else:
        words = f"{type(error).__name__}: {error}"
    return _short_repr(item), words, traceback.format_exc()


def remove_stale_slots(older_than: float = STALE_SLOT_SECONDS) -> None:
    """Remove the slots (and kept values) of processes that ended more than ``older_than`` s ago."""
    try:
        paths = list(slot_directory().iterdir())
    except OSError:
        return
    now = time.time()
    for path in paths:
        try:
            pid = int(path.name.split(".", 1)[0])
            if _alive(pid) or now - path.stat().st_mtime < older_than:
                continue
            path.unlink()
        except (ValueError, OSError):
            continue


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
