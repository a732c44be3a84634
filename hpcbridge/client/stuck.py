"""Items that do not come back: the rest of their chunk goes elsewhere, what runs is said, a release frees them.

A chunk is one task, so an item that hangs (or runs far longer than its neighbours) would keep
the chunk's other items waiting behind it while other workers sit idle. The worker's watchdog
(:mod:`hpcbridge.cluster.attempts`) takes such an item's thread out of the worker's pool (so the
tasks queued behind it there run) and says so in a scheduler event; while a client waits for the
run (:class:`Handoff`, called from :func:`hpcbridge.client.collect.collect`), it stops that chunk
after the running item and submits the chunk's remaining items as new chunks, which the record of
the run (and its run directory's manifest) then lists.

:func:`running_items` says which items of a run are running, where and for how long (for the
error of a ``gather`` that timed out), and :func:`free_workers` stops a released run's chunks,
ending a worker process whose item would not stop (its nanny starts a new one).
"""

from __future__ import annotations

import time
from typing import Any

from distributed import Client

from hpcbridge.client.futures import run_on_workers
from hpcbridge.client.runs import Run
from hpcbridge.client.tail import hand_on_planned
from hpcbridge.cluster import attempts

CHECK_SECONDS = 2.0  # how often a waiting client looks for stuck items
FIRST_CHECK_SECONDS = 1.0  # a wait shorter than this never looks (a map of tiny items pays nothing)
ASK_SECONDS = 10.0  # the bound on asking the workers what runs
RELEASE_GRACE = 2.0  # a released run's running items get this long to end before their workers are ended


class Handoff:
    """While a client waits for ``run``: the rest of each chunk whose item is stuck is submitted as new chunks."""

    def __init__(self, client: Client, run: Run) -> None:
        self.client, self.run = client, run
        self.next_check = time.monotonic() + FIRST_CHECK_SECONDS
        self.done: set[str] = set()

    def check(self, now: bool = False) -> bool:
        """Hand off the rest of stuck chunks (at most every :data:`CHECK_SECONDS`, or ``now``); True if any was."""
        if not now and time.monotonic() < self.next_check or self.client.status != "running":
            return False
        self.next_check = time.monotonic() + CHECK_SECONDS
        pending = {f.key: i for i, f in enumerate(self.run.futures) if f is not None and not f.done()}
        try:
            # Bounded: a scheduler that hangs (stopped, swapping) must not hold the client's wait, which
            # the watch then ends with the loss's error (get_events would wait for it forever).
            events = self.client.sync(self.client.scheduler.events, topic=attempts.STUCK_TOPIC,
                                      callback_timeout=ASK_SECONDS)
        except Exception:  # noqa: BLE001 -- the scheduler is busy or away: the watch says so
            return False
        handed = False
        for _, event in events or ():
            key = event.get("key") if isinstance(event, dict) else None
            if event.get("run") != self.run.name or key not in pending or key in self.done:
                continue
            self.done.add(key)
            handed = self._hand_off(key, event.get("worker")) or handed
        return handed

    def _hand_off(self, key: str, worker: str | None) -> bool:
        try:
            answers = self.client.sync(run_on_workers, self.client, attempts.cut, key, workers=[worker] if worker else None,
                                       callback_timeout=ASK_SECONDS)
        except Exception:  # noqa: BLE001 -- the worker went away meanwhile: its retry runs the chunk
            return False
        rest = next((a for a in answers.values() if isinstance(a, dict)), None)
        if rest is None or rest.get("task") is None:
            return False
        hand_on_planned(self.client, self.run, [(key, rest)])
        return True


def running_items(client: Client, run: str) -> list[dict[str, Any]]:
    """The items of ``run`` running now: index, item, worker, seconds on it (longest first); [] if unknown."""
    try:
        answers = client.sync(run_on_workers, client, attempts.active, run, callback_timeout=ASK_SECONDS)
    except Exception:  # noqa: BLE001 -- the workers did not answer in time: nothing to say
        return []
    found = [a for answer in answers.values() if isinstance(answer, list) for a in answer if a["index"] is not None]
    return sorted(found, key=lambda a: -a["seconds"])


def describe_running(items: list[dict[str, Any]], limit: int = 5) -> str:
    """``"item 37 (37) on tls://...:1234 for 21 s, holding items 4..36"``, for the first few."""
    said = [f"item {a['index']} ({a['item']}) on {a['worker']} for {a['seconds']:.0f} s"
            + (f", holding items {a['start']}..{a['index'] - 1}" if a["index"] > a["start"] else "")
            for a in items[:limit]]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(said) + more


def free_workers(client: Client, run: str, grace: float = RELEASE_GRACE) -> list[str]:
    """Stop the chunks of released run ``run`` after their running items; end the worker processes whose item
    does not end within ``grace`` s (their nannies start new ones). Returns the workers ended."""
    try:
        answers = client.sync(run_on_workers, client, attempts.stop_run, run, callback_timeout=ASK_SECONDS)
    except Exception:  # noqa: BLE001 -- the cluster is away: nothing runs there
        return []
    busy = [w for w, answer in answers.items() if isinstance(answer, list) and answer]
    deadline = time.monotonic() + grace
    while busy and time.monotonic() < deadline:
        time.sleep(0.1)
        still = {a["worker"] for a in running_items(client, run)}
        busy = [w for w in busy if w in still]
    if not busy:
        return []
    try:
        ended = client.sync(run_on_workers, client, attempts.end_for_release, run, workers=busy, callback_timeout=ASK_SECONDS)
    except Exception:  # noqa: BLE001
        return []
    return [w for w, answer in ended.items() if answer is True]
