"""Noticing, with bounded waits, that a run's cluster went away: its scheduler, its workers, its node."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from distributed import Client

from hpcbridge.addresses import address_answers, address_silent
from hpcbridge.client import losses
from hpcbridge.client.losses import RunLost
from hpcbridge.leaving import EVENT_TOPIC

WORKERLESS_SECONDS = 20.0  # a run whose cluster has had no worker this long is reported lost


RECONNECT_SECONDS = 10.0  # how long a client tries to reach a scheduler that went away


UNREACHABLE_SECONDS = 30.0  # a scheduler that answers nothing this long (its node cut off) is reported lost


class ClusterWatch:
    """Notices, with bounded waits, that the scheduler went away or that the cluster has no workers."""

    def __init__(self, client: Client, drain_from: float | None = None) -> None:
        self.client = client
        self.drain_from = drain_from
        self.next_look = time.monotonic() + 2.0
        self.workers = -1
        self.workerless_since: float | None = None
        self.unanswered_since: float | None = None
        self.connection_lost = False
        self.tried_seconds = 0.0
        self.drained: list[dict[str, Any]] = []
        self.address = getattr(client.scheduler, "address", "?")
        self.answered_at = time.monotonic()  # the scheduler's last answer (or the start of the watch)

    def lost(self, cancelled: bool = False) -> bool:
        """True once the run cannot go on: the scheduler is gone, or no worker joined for a while."""
        if cancelled or self.client.status != "running":
            return self._wait_for_reconnect()
        if time.monotonic() < self.next_look:
            return False
        self.next_look = time.monotonic() + 2.0
        workers = _ask(self.client, "ncores", timeout=5.0)
        if workers is None:
            if self.client.status != "running":
                return self._wait_for_reconnect()
            self.unanswered_since = self.unanswered_since or time.monotonic()
            silent = time.monotonic() - self.unanswered_since
            if silent < UNREACHABLE_SECONDS:
                return False
            self.connection_lost, self.tried_seconds = True, silent  # e.g. its node is cut off
            try:
                self.client.close(timeout=2)
            except Exception:
                pass
            return True
        self.unanswered_since = None
        self.answered_at = time.monotonic()
        if len(workers) < self.workers or not workers:
            self._read_drain_events()
        self.workers = len(workers)
        if workers:
            self.workerless_since = None
            return False
        self.workerless_since = self.workerless_since or time.monotonic()
        return time.monotonic() - self.workerless_since >= WORKERLESS_SECONDS

    @property
    def workers_gone(self) -> bool:
        return self.workers == 0

    def _wait_for_reconnect(self) -> bool:
        """Let the client try to reach the scheduler again (bounded); True when it could not."""
        if self.client.status == "running":
            return False  # futures were cancelled on a live cluster: a client released the run
        started = time.monotonic()
        while self.client.status == "connecting" and time.monotonic() - started < RECONNECT_SECONDS + 2:
            time.sleep(0.2)
        self.tried_seconds = time.monotonic() - started + 0.5
        self.connection_lost = self.client.status != "running"
        if self.connection_lost and self.client.status not in ("closed", "closing"):
            try:
                self.client.close(timeout=2)
            except Exception:
                pass
        return self.connection_lost

    def _read_drain_events(self) -> None:
        events = _ask(self.client, "events", timeout=5.0, topic=EVENT_TOPIC)
        if events:
            self.drained = [message for _, message in events]

    def explain(self, job: Any) -> tuple[type[RunLost], str]:
        """The cause of the loss (:func:`hpcbridge.client.losses.explain`). A scheduler whose address times out
        (its node is cut off) is said to be silent since its last answer, and its job is not waited for."""
        near_end = self.drain_from is not None and time.time() >= self.drain_from
        silent = self.connection_lost and address_silent(self.address)
        answers = self.connection_lost and not silent and address_answers(self.address)
        tried = (max(self.tried_seconds, time.monotonic() - self.answered_at) if silent or answers
                 else self.tried_seconds)
        return losses.explain(job, self.connection_lost, self.workers_gone, self.drained, tried, self.address,
                              near_end=near_end, silent=silent, hanging=answers,
                              refused=self.connection_lost and not silent and not answers)


def _ask(client: Client, method: str, timeout: float, **kwargs: Any) -> Any:
    """One call to the scheduler that gives up after ``timeout`` s (None then, or when it fails)."""
    if client.status != "running":
        return None

    async def asking() -> Any:
        return await asyncio.wait_for(getattr(client.scheduler, method)(**kwargs), timeout)

    try:
        return client.sync(asking)
    except Exception:
        return None
