"""The walltime drain's timing on one worker: it leaves no later than ``end - margin``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from hpcbridge.cluster import drain


class _Worker:
    """What the drain uses of a distributed Worker: its metrics, its events, its graceful close."""

    address = "tcp://127.0.0.1:1"

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.events: list[tuple[str, dict]] = []
        self.closed_at: float | None = None

    def log_event(self, topic: str, message: dict) -> None:
        self.events.append((topic, message))

    async def close_gracefully(self, restart: bool, reason: str) -> None:
        self.closed_at = time.time()


@pytest.fixture
def fresh_state(monkeypatch):
    monkeypatch.setattr(drain, "_state", {"end": None, "margin": drain.MINIMUM_MARGIN, "stagger": 0.0,
                                          "longest": 0.0, "draining": False, "running": 0})


@pytest.mark.parametrize("seconds_left", [30.4, 31.6, 33.0])
def test_a_worker_leaves_with_at_least_its_margin_left(fresh_state, monkeypatch, seconds_left) -> None:
    """Started with the job ending in ``seconds_left`` and a 30 s margin: it leaves with >= 30 s left.

    30.4 s: it starts past its leave time and leaves at once (it used to wait a poll first);
    31.6 and 33 s: its leave time may lie in the next second, and it wakes at that time, not a poll after.
    """
    monkeypatch.setenv("HPCBRIDGE_JOB_END", str(time.time() + seconds_left))
    monkeypatch.setenv("HPCBRIDGE_LIFETIME_MARGIN", "30")
    worker = _Worker()

    async def run() -> None:
        await drain.dask_setup(worker)
        await asyncio.wait_for(worker._hpcbridge_drain, timeout=15)

    asyncio.run(run())
    assert worker.closed_at is not None
    [(topic, event)] = worker.events
    assert topic == drain.EVENT_TOPIC and event["margin"] >= 30
    assert float(event["job_end"]) - worker.closed_at >= 29.5  # the graceful close began in time too
    assert drain.leave_at() is not None and drain.leave_at() <= float(event["job_end"]) - 30 - drain.CLOSE_LEAD
