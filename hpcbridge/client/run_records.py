"""A run's record on the scheduler, republished in the background while its tail is balanced.

Each round of tail balancing (:mod:`hpcbridge.client.tail`) replaces chunks in a run's record
(``client.publish_dataset`` under the run's name, which other clients and ``results(name)``
read). Publishing a record of hundreds of chunks costs the waiting client ~50 ms a round, most
of a round's time at hundreds of threads, while idle threads wait for the round to end. So the
rounds hand the record to :func:`publish_soon`, which publishes it on the client's event loop
while the client goes on; when rounds come faster than the scheduler takes records, only the
latest is sent (each replaces the one before whole). :func:`flush` waits until the latest record
is on the scheduler: the collect of a run calls it before it returns, and a release before it
unpublishes (a record sent after the release would bring the run back).

A cut chunk whose new record has not reached the scheduler yet is never read wrong: a chunk that
comes back with fewer items than a record lists is told apart (:mod:`hpcbridge.client.collect`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future as ConcurrentFuture
from typing import Any

from distributed import Client

logger = logging.getLogger(__name__)

_LOCK = threading.Lock()
# Per client and run name: the record still to send (None once sent) and the loop task sending them.
_WAITING: dict[tuple[int, str], dict[str, Any]] = {}
_SENDING: dict[tuple[int, str], ConcurrentFuture] = {}


def publish_soon(client: Client, name: str, record: dict[str, Any]) -> None:
    """Have ``record`` published as run ``name`` on ``client``'s scheduler, without waiting for it.

    ``record`` must not change afterwards (pass copies of the run's lists).
    """
    key = (id(client), name)
    with _LOCK:
        _WAITING[key] = record
        if key not in _SENDING:
            _SENDING[key] = asyncio.run_coroutine_threadsafe(_send(client, name, key), client.loop.asyncio_loop)


async def _send(client: Client, name: str, key: tuple[int, str]) -> None:
    """On the client's loop: publish the latest record of ``name`` until none is left to send."""
    while True:
        with _LOCK:
            record = _WAITING.pop(key, None)
            if record is None:
                _SENDING.pop(key, None)
                return
        try:
            await client._publish_dataset(record, name=name, override=True)
        except Exception as error:  # noqa: BLE001 -- the scheduler is away: the client's watch says so
            logger.warning("hpcbridge: the record of run %r could not be published: %s", name, error)


def flush(client: Client, name: str, timeout: float = 30.0) -> bool:
    """Wait (at most ``timeout`` s) until every record of ``name`` handed to :func:`publish_soon` is sent;
    True if none is left."""
    key = (id(client), name)
    deadline = time.monotonic() + timeout
    while True:
        with _LOCK:
            sending = _SENDING.get(key)
        if sending is None:
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        try:
            sending.result(timeout=left)
        except Exception:  # noqa: BLE001 -- a timeout, or the loop stopped: looked at again above
            if client.loop is None or not client.loop.asyncio_loop.is_running():
                return False
