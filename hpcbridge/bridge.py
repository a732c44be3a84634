"""Attach to a running Dask cluster through its scheduler file, and send work to it.

The scheduler file is the only thing a client needs: the job writes it when the scheduler is up.
:func:`connect` waits for it with a deadline of its own, because
``distributed.Client(scheduler_file=<missing file>, timeout=...)`` waits forever for a file that
is not there (distributed 2026.8), which is exactly the case while a job is still queued.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from distributed import Client, Future

_POLL_SECONDS = 0.2


class ConnectError(TimeoutError):
    """The cluster behind a scheduler file could not be reached in time; says what was waited for."""


def wait_for_scheduler_file(path: str | os.PathLike[str], timeout: float) -> dict[str, Any]:
    """Wait until ``path`` holds a complete scheduler file; return its contents."""
    path = Path(path).expanduser()
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = json.loads(path.read_text())
            if isinstance(info, dict) and info.get("address"):
                return info
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            raise ConnectError(
                f"no scheduler file at {path} after {timeout:g} s: the job may still be queued "
                "(hpcbridge status JOB) or may have failed before starting Dask (see its log)"
            )
        time.sleep(_POLL_SECONDS)


def connect(scheduler_file: str | os.PathLike[str], n_workers: int = 1, timeout: float = 300.0) -> Bridge:
    """Attach to the cluster whose scheduler writes ``scheduler_file``; wait for ``n_workers``.

    One deadline, ``timeout`` seconds, covers all three waits: for the file (the job may still be
    queued), for the scheduler to answer, and for the workers to join.
    """
    deadline = time.monotonic() + timeout
    info = wait_for_scheduler_file(scheduler_file, timeout)
    address = info["address"]
    try:
        client = Client(address, timeout=f"{max(1.0, min(30.0, deadline - time.monotonic())):.0f}s",
                        set_as_default=False)
    except OSError as error:
        raise ConnectError(
            f"the scheduler at {address} (from {scheduler_file}) does not answer: {error}. "
            "A scheduler file left by a finished job points at a dead address."
        ) from None
    bridge = Bridge(client)
    try:
        bridge.wait_for_workers(n_workers, timeout=max(0.0, deadline - time.monotonic()))
    except BaseException:
        client.close()
        raise
    return bridge


def _call(item: Any, fn: Callable[..., Any], extra: Sequence[Any]) -> Any:
    return fn(item, *extra)


class Bridge:
    """A client attached to a cluster: broadcast inputs, map work, gather results.

    Use it as a context manager, or call :meth:`close`; :meth:`shutdown` also ends the cluster
    (and with it the batch job).
    """

    def __init__(self, client: Client) -> None:
        self.client = client

    def wait_for_workers(self, n_workers: int, timeout: float) -> None:
        """Block until at least ``n_workers`` workers have joined, or raise :class:`ConnectError`."""
        try:
            self.client.wait_for_workers(n_workers, timeout=timeout)
        except TimeoutError:
            raise ConnectError(
                f"only {self.n_workers} of {n_workers} workers joined {self.client.scheduler.address} "
                f"within {timeout:.0f} s"
            ) from None

    @property
    def n_workers(self) -> int:
        """How many workers are connected now."""
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    @property
    def total_threads(self) -> int:
        """The sum of every worker's threads."""
        return sum(self.client.nthreads().values())

    @property
    def dashboard_link(self) -> str:
        """The address of the cluster's dashboard."""
        return self.client.dashboard_link

    def broadcast(self, obj: Any) -> Future:
        """Send ``obj`` to every worker once; pass the returned handle to :meth:`map`."""
        return self.client.scatter([obj], broadcast=True, hash=False)[0]

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(*args)`` on a worker."""
        return self.client.submit(fn, *args, pure=False)

    def map(self, fn: Callable[..., Any], items: Iterable[Any], *broadcast: Future) -> list[Future]:
        """Run ``fn(item, *broadcast)`` for every item; the broadcast handles reach every call."""
        return self.client.map(_call, list(items), fn=fn, extra=tuple(broadcast), pure=False)

    def gather(self, futures: Sequence[Future]) -> list[Any]:
        """Wait for ``futures`` and return their results, in order."""
        return self.client.gather(list(futures))

    def close(self) -> None:
        """Detach this client; the cluster keeps running."""
        self.client.close()

    def shutdown(self) -> None:
        """End the cluster: the scheduler and its workers exit, and so does the batch job."""
        self.client.shutdown()

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
