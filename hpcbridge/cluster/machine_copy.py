"""One read-only copy of an object per machine, shared by the processes of its owner.

A broadcast used to leave one private copy in every worker: 4 workers on a node meant 4 network
transfers and 4 times the memory. With this module the first worker on a machine that holds the
object writes it once into an anonymous shared-memory file (``memfd_create``); the other workers
on the machine open that same file through ``/proc/<pid>/fd/<fd>`` of a holder and map it
read-only, which costs no copy at all.

Why this is safe and leaves nothing behind:

- **Owner only**: the kernel lets a process open another's ``/proc/<pid>/fd/<n>`` only when it
  may trace it, that is, the same Unix user (or root). No file is created in ``/dev/shm``.
- **Immutable**: the file is sealed against writes, shrinking and growing before anyone else
  sees it; an attaching process checks the seals and a random token written at the start, so a
  reused pid or a foreign file is refused (the caller then copies over the network as before).
- **No leak**: the memory belongs to no path; the kernel frees it when the last holder closes
  its descriptor and drops its mapping, also when a worker is SIGKILLed or the job ends.

The object is stored with pickle protocol 5: its large buffers (NumPy arrays, bytes) go out of
band, each at a 64-byte aligned offset, so loading maps them instead of copying. The objects
loaded from a shared copy are read-only where they have buffers (a NumPy array has
``flags.writeable == False``); small Python objects are rebuilt per process.

Linux only (``os.memfd_create`` and ``/proc``); elsewhere :func:`publish` returns ``None`` and
callers keep private copies.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import pickle
import secrets
import struct
from dataclasses import dataclass
from functools import cache
from typing import Any

from hpcbridge.private_files import write_at

MAGIC = b"HPCBMC01"
_PREFIX = struct.Struct("<8s16sQ")  # magic, token, length of the region table
ALIGN = 64
_SEALS = (getattr(fcntl, "F_SEAL_SEAL", 0) | getattr(fcntl, "F_SEAL_SHRINK", 0)
          | getattr(fcntl, "F_SEAL_GROW", 0) | getattr(fcntl, "F_SEAL_WRITE", 0))


@cache
def machine() -> str:
    """Who can share memory with this process: the boot of the kernel and the pid namespace.

    Two processes with the same value see the same ``/proc/<pid>``; a worker on another node (or
    in another container) has another value, and no attachment is tried.
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as file:
            boot = file.read().strip()
        return f"{boot}/{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


@dataclass(frozen=True)
class Where:
    """How a process on the same machine finds a holder's shared copy."""

    machine: str
    pid: int
    fd: int
    token: bytes


class MachineCopy:
    """An open, sealed shared-memory copy of one object; :meth:`load` gives the object itself."""

    def __init__(self, fd: int, token: bytes) -> None:
        self.fd = fd
        self.token = token
        self.nbytes = os.fstat(fd).st_size
        self._map = mmap.mmap(fd, self.nbytes, access=mmap.ACCESS_READ)

    @property
    def payload_bytes(self) -> int:
        """The bytes of the object's pickle and buffers, without the table and the alignment."""
        return sum(length for _, length in self._regions())

    def _regions(self) -> list[tuple[int, int]]:
        view = memoryview(self._map)
        _, _, table_length = _PREFIX.unpack_from(view)
        return pickle.loads(view[_PREFIX.size:_PREFIX.size + table_length])

    def where(self) -> Where:
        return Where(machine(), os.getpid(), self.fd, self.token)

    def load(self) -> Any:
        """The object, its buffers mapped read-only from the shared copy (no copy of them made)."""
        view = memoryview(self._map)
        (start, length), *buffers = self._regions()
        return pickle.loads(view[start:start + length],
                            buffers=[view[offset:offset + size] for offset, size in buffers])

    def load_private(self) -> Any:
        """The object as a private, writable copy: its buffers copied out of the shared copy (one memory
        copy each, no decoding), which this leaves as it is."""
        (start, length), *buffers = self._regions()
        view = memoryview(self._map)
        try:
            copies = [bytearray(view[offset:offset + size]) for offset, size in buffers]
            return pickle.loads(view[start:start + length], buffers=copies)
        finally:
            view.release()

    def release(self) -> None:
        """Close the descriptor and unmap the copy: for a process that took a private copy and keeps none."""
        self.close()
        with contextlib.suppress(BufferError):  # an object still maps it: the mapping goes with that object
            self._map.close()

    def close(self) -> None:
        """Close the descriptor (others can no longer attach through us); loaded objects stay valid."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def publish(obj: Any, label: str = "hpcbridge") -> MachineCopy | None:
    """Write ``obj`` into a new sealed shared-memory file; ``None`` where the system has no memfd."""
    if not hasattr(os, "memfd_create") or not machine():
        return None
    buffers: list[pickle.PickleBuffer] = []
    main = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    parts = [memoryview(main), *raws]
    # Room for the table of (offset, length) pairs at their largest encoding, before the offsets are known.
    table_length = len(pickle.dumps([(2**62 + index, 2**62 + index) for index in range(len(parts))]))
    offset = _aligned(_PREFIX.size + table_length)
    regions = []
    for part in parts:
        regions.append((offset, part.nbytes))
        offset = _aligned(offset + part.nbytes)
    table = pickle.dumps(regions)
    token = secrets.token_bytes(16)
    try:
        fd = os.memfd_create(label, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    except OSError:
        return None  # a kernel without memfd (or one that refuses it): private copies, as before
    try:
        os.ftruncate(fd, offset)
        write_at(fd, _PREFIX.pack(MAGIC, token, len(table)) + table, 0)
        for (start, _), part in zip(regions, parts):
            write_at(fd, part, start)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        return MachineCopy(fd, token)
    except BaseException:
        os.close(fd)
        raise


def attach(where: Where) -> MachineCopy | None:
    """Open a holder's shared copy if it is on this machine and is what it says; else ``None``."""
    if not where.machine or where.machine != machine():
        return None
    try:
        fd = os.open(f"/proc/{int(where.pid)}/fd/{int(where.fd)}", os.O_RDONLY | os.O_CLOEXEC)
    except (OSError, ValueError, TypeError):
        return None  # the holder is gone, or the kernel does not let us trace it
    try:
        prefix = os.pread(fd, _PREFIX.size, 0)
        sealed = fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _SEALS == _SEALS
        if sealed and len(prefix) == _PREFIX.size and _PREFIX.unpack(prefix)[:2] == (MAGIC, where.token):
            return MachineCopy(fd, where.token)
    except OSError:
        pass
    os.close(fd)
    return None


def _aligned(offset: int) -> int:
    return -(-offset // ALIGN) * ALIGN

