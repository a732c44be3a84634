"""A run's finished chunks on disk, so that computed results outlive the cluster that computed them.

The worker that finishes a chunk writes it here at once (the client may be dead by then; on an
HPC system the workers and the client share this filesystem). Shared filesystems (Lustre, GPFS)
suffer from many small files, so a run's folder holds a few files per worker process, not one per
chunk: each worker process appends the chunks it finishes to a log of its own for that run
(``<host>-<pid>-<token>.chunks``; :mod:`hpcbridge.chunk_log` holds the record format). No file is
written by two processes, so there is no shared index to race on: the records of the logs *are*
the record of which chunks are saved. A record's header and its values carry checksums and its
length, so a record cut short (its process died while writing it) or damaged (a node crash) is
never read as values: its chunk counts as not saved and is computed again. A chunk saved twice
(a retry) is read once. Folders of an earlier version (one ``chunk-<first>-<end>.npy``/``.pkl``
file per chunk) are read too.

The client writes ``manifest.json`` once per run, before any chunk is submitted: the function's
identity, a digest of the items (and of the plain extra arguments), the number of items and, once
planned, the chunk bounds. Everything is owner-only (directories 0700, files 0600): results are
the user's data.

``map(fn, items, name=N)`` on a later cluster finds ``N``'s manifest, checks that the function
and the items are the same, and submits only the items no saved chunk covers.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcbridge import chunk_log
from hpcbridge.private_files import write_private_file

MANIFEST = "manifest.json"
FORMAT = 2  # 1: a file per chunk (still read); 2: a log per worker process (hpcbridge.chunk_log)
_CHUNK_PREFIX = "chunk-"


class RunMismatchError(ValueError):
    """A run of that name exists on disk for another function or other items; says which differs."""


class RunDirectoryWarning(UserWarning):
    """A run's folder could not be written during a map (chunks are only in memory) or removed after it."""


class RunDirectoryError(OSError):
    """A run's folder cannot be written (full, read-only, gone...): one line naming the path and the reason.

    An ``OSError`` with the ``errno`` of the failure that says so; ``path`` is the run's folder and
    ``reason`` that failure.
    """

    def __init__(self, path: str, reason: OSError) -> None:
        super().__init__(reason.errno, reason.strerror)
        self.path, self.reason, self.filename = path, reason, path

    def __str__(self) -> str:
        return (f"run directory {self.path} cannot be written: {failure_text(self.reason)}; make room there or fix "
                "the folder, choose another with connect(..., run_directory=...), or map(..., save=False) to keep "
                "the results in the cluster's memory only")


@dataclass(frozen=True)
class RunDirectory:
    """The folder of one run: ``<root>/<name>/``. Cheap to pickle (one string), so every chunk task carries it."""

    path: str

    @classmethod
    def under(cls, root: str | os.PathLike[str], name: str) -> RunDirectory:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"name: {name!r} cannot name a run directory; use letters, digits, '-', '_' or '.'")
        return cls(str(Path(root).expanduser() / name))

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def exists(self) -> bool:
        """True when a manifest is there (the run was started with saving on)."""
        return os.path.exists(os.path.join(self.path, MANIFEST))

    def create(self, manifest: dict[str, Any]) -> None:
        """Make the folder (owner-only, with its parents) and write the manifest."""
        _make_private_dirs(self.path)
        self.write_manifest(manifest)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_private_file(os.path.join(self.path, MANIFEST), json.dumps({"format": FORMAT, **manifest}).encode())

    def write_error(self) -> OSError | None:
        """Why a file cannot be written in this folder now (a probe written and removed), or None."""
        probe = os.path.join(self.path, ".hpcbridge-probe")
        try:
            write_private_file(probe, b"probe")
            os.unlink(probe)
        except OSError as error:
            return error
        return None

    def manifest(self) -> dict[str, Any]:
        """The manifest as written; ``{}`` when there is none."""
        try:
            with open(os.path.join(self.path, MANIFEST)) as file:
                return json.load(file)
        except FileNotFoundError:
            return {}

    # --- chunks: written by workers, read by clients -----------------------------------

    def save_chunk(self, low: int, high: int, values: Any) -> bytes | None:
        """Append one finished chunk's values to this process's log: ``.npy`` bytes for a NumPy array of
        plain values, else pickled.

        Returns the pickle it wrote (``None`` for an array), so that the worker can send those
        bytes back instead of having its values pickled a second time for the trip.
        """
        import numpy as np

        if isinstance(values, np.ndarray) and values.dtype != object:
            array = np.ascontiguousarray(values)
            header = io.BytesIO()
            np.lib.format.write_array_header_2_0(header, np.lib.format.header_data_from_array_1_0(array))
            chunk_log.append(self.path, chunk_log.CHUNK_NPY, low, high, b"",
                             [header.getbuffer(), memoryview(array).cast("B") if array.size else b""])
            return None
        pickled = pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)
        chunk_log.append(self.path, chunk_log.CHUNK_PICKLE, low, high, b"", [pickled])
        return pickled

    def load_chunk(self, low: int, high: int) -> Any:
        """A saved chunk's values, or raise ``FileNotFoundError`` (``ValueError`` when its record is damaged)."""
        chunks = self.index().chunks
        if (low, high) not in chunks:
            raise FileNotFoundError(f"no chunk of items {low}..{high - 1} is saved in {self.path}")
        found = self._read_each(chunks, [(low, high)], _load)
        if (low, high) not in found:
            raise ValueError(f"the saved chunk of items {low}..{high - 1} in {self.path} is damaged")
        return found[(low, high)]

    def load_from(self, low: int, high: int) -> tuple[int, Any]:
        """The longest saved chunk that begins at item ``low`` and ends by ``high``: its end and values (a chunk's
        task saved less than its items when a client cut it, the rest going to other tasks). Raises
        ``FileNotFoundError`` when none reads well."""
        chunks = self.index().chunks
        for end in sorted((end for start, end in chunks if start == low and low < end <= high), reverse=True):
            found = self._read_each(chunks, [(low, end)], _load)
            if (low, end) in found:
                return end, found[(low, end)]
        raise FileNotFoundError(f"no chunk from item {low} to at most {high - 1} is saved in {self.path}")

    def load_chunks(self, bounds: Sequence[tuple[int, int]]) -> dict[tuple[int, int], Any]:
        """The values of every saved chunk among ``bounds`` that can be read (damaged ones are left out),
        each log opened once."""
        return self._read_each(self.index().chunks, bounds, _load)

    @staticmethod
    def _read_each(chunks: dict[tuple[int, int], list[Any]], bounds: Sequence[tuple[int, int]],
                   read: Any) -> dict[tuple[int, int], Any]:
        """``read(location, open log)`` for each of ``bounds`` saved in ``chunks``: log by log in file order
        (each opened once), then, for those whose record fails, from their other copies (a retry's)."""
        by_file: dict[str, list[tuple[tuple[int, int], Any]]] = {}
        for wanted in bounds:
            key = (wanted[0], wanted[1])
            if chunks.get(key):
                location = chunks[key][0]
                by_file.setdefault(getattr(location, "path", location), []).append((key, location))
        found: dict[tuple[int, int], Any] = {}
        for path, here in by_file.items():
            try:
                with open(path, "rb") as file:
                    for key, location in sorted(here, key=lambda pair: getattr(pair[1], "offset", 0)):
                        with contextlib.suppress(OSError, ValueError, EOFError, pickle.UnpicklingError):
                            found[key] = read(location, file)
            except OSError:
                pass
        for here in by_file.values():
            for key, _ in here:
                for location in chunks[key][1:] if key not in found else ():
                    try:
                        with open(getattr(location, "path", location), "rb") as file:
                            found[key] = read(location, file)
                        break
                    except (OSError, ValueError, EOFError, pickle.UnpicklingError):
                        continue
        return found

    def has_chunk(self, low: int, high: int) -> bool:
        return (low, high) in self.index().chunks

    def saved(self, verify: bool = False) -> list[tuple[int, int]]:
        """The (first, end) bounds of every saved chunk, sorted. Records are known whole by their headers;
        ``verify`` also reads every payload and checks it (a resume, which will not compute them again)."""
        chunks = self.index().chunks
        if verify:
            return sorted(self._read_each(chunks, list(chunks), _check))
        return sorted(chunks)

    def saved_items(self) -> int:
        return sum(high - low for low, high in covering(self.saved()))

    def files(self) -> list[str]:
        """The names of the files in the folder (the logs, the manifest), sorted; [] when it is gone."""
        try:
            return sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []

    def index(self) -> Index:
        """Where each saved chunk (and what :meth:`keep` kept) is, read from the logs' headers now."""
        index = Index({}, {})
        for entry in self.files():
            path = os.path.join(self.path, entry)
            if entry.endswith(chunk_log.SUFFIX):
                try:
                    for record in chunk_log.read_records(path):
                        bounds = (record.low, record.high)
                        if record.kind in (chunk_log.CHUNK_PICKLE, chunk_log.CHUNK_NPY):
                            index.chunks.setdefault(bounds, []).append(record)  # saved twice (a retry): read once
                        elif record.kind in (chunk_log.FAILED, chunk_log.KEPT):
                            key = (record.kind, *bounds, record.tag)
                            if key not in index.kept or index.kept[key].time_ns <= record.time_ns:
                                index.kept[key] = record  # the latest attempt's
                except OSError:
                    continue  # removed meanwhile, or unreadable: its chunks count as not saved
            elif (bounds := _legacy_chunk(entry)) is not None:
                index.chunks.setdefault(bounds, []).append(path)
        return index

    # --- what one task keeps for its own retries: never a saved chunk ----------------------------

    def keep(self, kind: str, low: int, high: int, key: str, kept: Any) -> None:
        """Keep something for a rerun of task ``key`` (chunk ``low..high-1``) only: ``"failed"``, a finished
        chunk with failing items (its result would be lost with a worker that died holding it);
        ``"kept"``, what an attempt computed before its worker process ended. It is no saved chunk:
        a later start of the run (a resume) runs those items again, results from disk do not count it.
        A later keep of the same task replaces it."""
        chunk_log.append(self.path, _KEPT_KINDS[kind], low, high, _tag(key),
                         [pickle.dumps(kept, protocol=pickle.HIGHEST_PROTOCOL)])

    def kept(self, kind: str, low: int, high: int, key: str) -> Any:
        """What :meth:`keep` kept last (None when nothing, or unreadable)."""
        record = self.index().kept.get((_KEPT_KINDS[kind], low, high, _tag(key)))
        if record is None:
            return None
        try:
            return pickle.loads(record.payload())
        except (OSError, ValueError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
            return None


@dataclass
class Index:
    """A run folder's saved chunks by bounds (each copy: a log's record, or an earlier version's file by
    path; the first that reads well counts), and what was kept for retries by (kind, first, end, task tag)."""

    chunks: dict[tuple[int, int], list[chunk_log.Record | str]]
    kept: dict[tuple[int, int, int, bytes], chunk_log.Record]


_KEPT_KINDS = {"failed": chunk_log.FAILED, "kept": chunk_log.KEPT}


def _tag(key: str) -> bytes:
    return hashlib.sha1(key.encode()).digest()[:8]


def _legacy_chunk(entry: str) -> tuple[int, int] | None:
    """The bounds of an earlier version's chunk file (``chunk-<first>-<end>.npy`` or ``.pkl``), else None."""
    stem, dot, extension = entry.rpartition(".")
    if not dot or extension not in ("npy", "pkl") or not stem.startswith(_CHUNK_PREFIX):
        return None
    low, _, high = stem[len(_CHUNK_PREFIX):].partition("-")
    return (int(low), int(high)) if low.isdigit() and high.isdigit() else None


def _check(location: chunk_log.Record | str, file: Any) -> bool:
    """True when a chunk's record checks out (an earlier version's file: when it is there)."""
    if not isinstance(location, str):
        location.payload(file)
    return True


def _load(location: chunk_log.Record | str, file: Any = None) -> Any:
    """A chunk's values from its record (checked), or from an earlier version's file."""
    import numpy as np

    if isinstance(location, str):
        if location.endswith(".npy"):
            return np.load(location, allow_pickle=False)
        with open(location, "rb") as legacy:
            return pickle.load(legacy)
    payload = location.payload(file)
    if location.kind == chunk_log.CHUNK_NPY:
        return np.lib.format.read_array(io.BytesIO(payload), allow_pickle=False)
    return pickle.loads(payload)


def failure_text(error: BaseException) -> str:
    """An error in a few words: an OSError without the file it names (a temporary file's name says nothing
    to the user; the folder is named beside it), anything else as its type and text."""
    if isinstance(error, OSError) and error.strerror:
        return f"[Errno {error.errno}] {error.strerror}" if error.errno else error.strerror
    return f"{type(error).__name__}: {error}"


def covering(saved: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The saved chunks that hold each item once: from the first item up, the longest chunk saved
    from each place on; a chunk that overlaps one taken already is left out.

    Saved chunks overlap when a retry computed a whole chunk (its worker died, and no nanny could
    say where) whose rest a client had cut off and handed to new chunks, which saved theirs too.
    Read as chunks, both copies of those items would come back.

    >>> covering([(0, 10), (4, 7), (7, 10), (10, 12)])
    [(0, 10), (10, 12)]
    >>> covering([(0, 4), (4, 7), (7, 10), (0, 10)])
    [(0, 10)]
    >>> covering([(0, 3), (5, 7)])
    [(0, 3), (5, 7)]
    """
    kept: list[tuple[int, int]] = []
    for low, high in sorted(saved, key=lambda bounds: (bounds[0], -bounds[1])):
        if not kept or low >= kept[-1][1]:
            kept.append((low, high))
    return kept


def missing_ranges(n_items: int, saved: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The item ranges of ``[0, n_items)`` that no saved chunk covers.

    >>> missing_ranges(10, [(0, 3), (5, 7)])
    [(3, 5), (7, 10)]
    >>> missing_ranges(4, [(0, 2), (2, 4)])
    []
    """
    gaps, position = [], 0
    for low, high in sorted(saved):
        if low > position:
            gaps.append((position, low))
        position = max(position, high)
    if position < n_items:
        gaps.append((position, n_items))
    return gaps


def describe_ranges(ranges: Sequence[tuple[int, int]], limit: int = 4) -> str:
    """``"items 3..4, 7..9"`` for ranges of items, the first few of many.

    >>> describe_ranges([(3, 5), (7, 10)])
    'items 3..4, 7..9'
    >>> describe_ranges([(3, 4), (4, 6), (9, 10)])
    'items 3..5, 9'
    """
    merged: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
        else:
            merged.append((low, high))
    ranges = merged
    parts = [f"{low}..{high - 1}" if high - low > 1 else f"{low}" for low, high in ranges[:limit]]
    more = f" and {len(ranges) - limit} more ranges" if len(ranges) > limit else ""
    return "items " + ", ".join(parts) + more if parts else "no items"


def function_identity(fn: Any) -> str:
    """Which function a run maps, as stable text: ``module:qualname`` and a digest of its code.

    Functions named by file are imported under a module name that carries a digest of the file,
    so an edited file is another function.
    """
    import hashlib

    inner = getattr(fn, "fn", fn)  # a ShippedFunction wraps the user's function
    module = getattr(inner, "__module__", None) or type(inner).__module__
    qualname = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    code = getattr(inner, "__code__", None)
    if code is not None:
        digest = hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:16]
    else:  # a builtin, a functools.partial, a callable object: Dask's deterministic token
        from dask.base import tokenize

        digest = tokenize(inner)[:16]
    return f"{module}:{qualname}#{digest}"


def items_digest(items: Any, extra: Sequence[Any]) -> str:
    """A digest of the items and the plain extra arguments (broadcasts count by name only).

    Every saved map computes it, so it must be cheap beside the map: a range is digested by its
    bounds, a list or tuple by its pickle (200,000 ints: 3 ms, where ``dask.base.tokenize``
    takes 26 ms, and 7 ms for a range it walks); anything else (arrays, items pickle cannot
    take) by ``tokenize``.

    >>> items_digest(range(5), []) == items_digest(range(5), []) != items_digest(range(6), [])
    True
    >>> items_digest([1, 2], ["a"]) == items_digest([1, 2], ["a"]) != items_digest([1, 3], ["a"])
    True
    """
    head = (type(items).__name__, len(items))
    if isinstance(items, range):
        head, items = head + (items.start, items.stop, items.step), ()
    if isinstance(items, (range, list, tuple)):
        try:
            return hashlib.blake2b(pickle.dumps((head, items, *extra), protocol=5), digest_size=16).hexdigest()
        except Exception:  # noqa: BLE001 -- e.g. a lambda among the items: tokenize knows more objects
            pass
    from dask.base import tokenize

    return tokenize(*head, items, *extra)


def _make_private_dirs(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)  # makedirs' mode is masked by the umask, and an existing folder keeps its own
    parent = os.path.dirname(path)
    if os.path.basename(parent) == "runs":
        os.chmod(parent, 0o700)


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
