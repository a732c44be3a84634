"""A worker process's log of saved chunks: records appended to one owner-only file, read back safely.

Each worker process appends what it saves for a run to a file of its own in the run's folder
(:mod:`hpcbridge.rundir`), so a run holds a few files per worker process instead of one per chunk
(shared filesystems such as Lustre and GPFS suffer from many small files, and each file costs
their metadata server a create, a rename and a lookup). A file is only ever written by the
process that created it (``O_EXCL``, a name with its host, process id and a random token), and
by one of its threads at a time.

A record is a fixed header (:data:`HEADER`), then its payload::

    magic "HBR1", kind (byte), 3 bytes of padding, first item, end item, time written (ns),
    tag (8 bytes), payload length, CRC-32 of the payload, CRC-32 of the header before it

all little-endian. The header's own checksum guards the length that leads to the next record;
the payload's guards the values. A reader (:func:`read_records`) stops at the first record that
is not whole or whose header does not check out: a process that died while writing leaves at
most its last record torn, and that record is never read as values. A write that fails half-way
(a full disk) is cut back off the file before the error is raised, so records written after it
stay reachable. Each record is written with the file opened for appending and closed after it:
no descriptor stays open on a folder that a released run removes (its space would stay taken),
and a folder removed and made again gets a new log.
"""

from __future__ import annotations

import collections
import os
import secrets
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

SUFFIX = ".chunks"
MAGIC = b"HBR1"
_HEADER = struct.Struct("<4sB3xqqq8sqII")
HEADER = _HEADER.size  # 56 bytes
CHUNK_PICKLE, CHUNK_NPY, FAILED, KEPT = 0, 1, 2, 3  # record kinds
LOCK_SECONDS = 30.0  # a writer that waits longer than this for its process's other writer gives up (an OSError)
NAMES_KEPT = 1000  # the runs this process remembers its log's name for (a forgotten one starts a new log)
_READ_BLOCK = 1 << 16


@dataclass(frozen=True)
class Record:
    """Where one record's payload is, and what it says it holds."""

    path: str
    offset: int  # of the payload
    length: int
    kind: int
    low: int
    high: int
    time_ns: int
    tag: bytes
    crc: int

    def payload(self, file: object | None = None) -> bytes:
        """The record's payload, checked against its checksum (``ValueError`` when it does not match).

        ``file`` is the log already open for reading (binary), to read many records with one open.
        """
        if file is None:
            with open(self.path, "rb") as opened:
                return self.payload(opened)
        file.seek(self.offset)  # type: ignore[attr-defined]
        data = file.read(self.length)  # type: ignore[attr-defined]
        if len(data) != self.length or zlib.crc32(data) != self.crc:
            raise ValueError(f"the record of items {self.low}..{self.high - 1} in {self.path} is damaged "
                             "(its checksum does not match)")
        return data


def read_records(path: str) -> Iterator[Record]:
    """The whole records of the log at ``path``, in the order written, up to the first that is not whole.

    Only headers are read here (the payloads are skipped): :meth:`Record.payload` checks a payload
    when it is read.
    """
    with open(path, "rb", buffering=_READ_BLOCK) as file:
        size = os.fstat(file.fileno()).st_size
        offset = 0
        while offset + HEADER <= size:
            file.seek(offset)
            header = file.read(HEADER)
            if len(header) < HEADER:
                return
            magic, kind, low, high, time_ns, tag, length, crc, header_crc = _HEADER.unpack(header)
            if magic != MAGIC or zlib.crc32(header[:-4]) != header_crc or length < 0:
                return
            end = offset + HEADER + length
            if end > size:
                return  # torn: its process ended while writing it
            yield Record(path, offset + HEADER, length, kind, low, high, time_ns, tag, crc)
            offset = end


# --- writing: this process's own log per run folder --------------------------------------------------

_NAMES: collections.OrderedDict[tuple[int, str], tuple[str, threading.Lock]] = collections.OrderedDict()
_NAMES_LOCK = threading.Lock()


def _log_of(folder: str) -> tuple[str, threading.Lock]:
    """This process's log name in ``folder`` and the lock its writers take (the process id is part of the
    key: a forked child never writes into its parent's log)."""
    key = (os.getpid(), folder)
    with _NAMES_LOCK:
        found = _NAMES.get(key)
        if found is None:
            name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
            found = _NAMES[key] = (name, threading.Lock())
            while len(_NAMES) > NAMES_KEPT:
                _NAMES.popitem(last=False)
        else:
            _NAMES.move_to_end(key)
        return found


def _forget_log(folder: str, name: str) -> None:
    """Write into a new log from now on: this one has a torn record that could not be cut off."""
    with _NAMES_LOCK:
        key = (os.getpid(), folder)
        if key in _NAMES and _NAMES[key][0] == name:
            del _NAMES[key]


def append(folder: str, kind: int, low: int, high: int, tag: bytes, parts: Sequence[bytes | memoryview]) -> str:
    """Append one record (its payload is ``parts`` joined) to this process's log in ``folder``; its path.

    Raises the ``OSError`` of a write that failed (the folder is gone, full, read-only): the log is
    then as it was before.
    """
    views = [memoryview(part).cast("B") for part in parts]
    length = sum(view.nbytes for view in views)
    crc = 0
    for view in views:
        crc = zlib.crc32(view, crc)
    body = _HEADER.pack(MAGIC, kind, low, high, time.time_ns(), tag.ljust(8, b"\0")[:8], length, crc, 0)[:-4]
    header = body + struct.pack("<I", zlib.crc32(body))
    name, lock = _log_of(folder)
    path = os.path.join(folder, name)
    if not lock.acquire(timeout=LOCK_SECONDS):
        raise TimeoutError(f"the log {path} was busy for {LOCK_SECONDS:g} s")
    try:
        created = False
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:  # the first record, or the folder was removed (and perhaps made again)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:  # another file took the name meanwhile: never write into it
                _forget_log(folder, name)
                raise
            created = True
        written = [0]
        try:
            _write_all(fd, [memoryview(header), *views], written)
        except BaseException:
            _cut_back(fd, folder, name, path, created, written[0])
            raise
        finally:
            os.close(fd)
    finally:
        lock.release()
    return path


def _write_all(fd: int, views: list[memoryview], written: list[int]) -> None:
    """Write every view in turn (one system call when it takes them all: a call may write less, at most
    about 2 GiB on Linux), counting the bytes written in ``written[0]`` as they go."""
    while views:
        count = os.writev(fd, views)
        written[0] += count
        while views and count >= views[0].nbytes:
            count -= views[0].nbytes
            views.pop(0)
        if views and count:
            views[0] = views[0][count:]


def _cut_back(fd: int, folder: str, name: str, path: str, created: bool, written: int) -> None:
    """After a failed write of ``written`` bytes of a record: cut them off the log (the file ends with
    them: no other writer appends to it); remove a log that this write made and that is empty now.
    When the file cannot be cut, this process starts a new log, so that no record follows the torn one."""
    try:
        good = os.fstat(fd).st_size - written
        if written:
            os.ftruncate(fd, good)
        if created and good == 0:
            os.unlink(path)
            _forget_log(folder, name)
    except OSError:
        _forget_log(folder, name)
