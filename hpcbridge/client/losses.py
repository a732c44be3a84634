"""Why a run has items without results, said in the batch system's words, with what to do next.

One error type per cause, all :class:`RunLost` (a :class:`RunError`):
:class:`WalltimeReached`, :class:`JobCancelled`, :class:`NodeFailed`, :class:`SchedulerLost`
(it died or cannot be reached; says for how long it was tried; :class:`SchedulerUnreachable` when
its job still runs, e.g. its node is cut off the network) and :class:`WorkersLeft`. Each
carries the run's progress (items done, saved on disk, missing), the results it has
(``error.results``: one value per item in input order, ``None`` where an item has none) and the
missing item ranges (``error.missing``), so nothing already computed is thrown away with the error.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hpcbridge.rundir import describe_ranges

if TYPE_CHECKING:
    from hpcbridge.backends.job import SubmittedJob

JOB_STATE_WAIT = 10.0  # how long to let the batch system catch up with a lost scheduler


class RunError(RuntimeError):
    """A whole chunk of a run failed outside the user function (e.g. its worker died, or unpickling).

    ``results`` (when set) holds every result the run has, in input order (``None`` for items
    without one), and ``missing`` the item ranges without a result.
    """

    results: list[Any] | None = None
    missing: list[tuple[int, int]] = []  # noqa: RUF012 -- replaced per instance, never changed in place


class RunLost(RunError):
    """Items of a run have no result because the cluster (or part of it) went away."""

    cause = "the cluster went away"
    # Items the cluster had computed, also those lost with it since (None: as many as ``done``), and why
    # computed results are not in the run directory (None: nothing failed there). Filled in by the
    # bridge that collects the run (hpcbridge.client.saving.explain_lost).
    computed: int | None = None
    save_error: str | None = None

    def __init__(self, run: str, what: str, n_items: int, done: int, saved: int,
                 missing: Sequence[tuple[int, int]], results: list[Any] | None = None,
                 directory: str | None = None, job_id: str | None = None) -> None:
        super().__init__(run, what)
        self.run, self.what, self.n_items, self.done, self.saved = run, what, n_items, done, saved
        self.missing = list(missing)
        self.results = results
        self.directory, self.job_id = directory, job_id

    @property
    def n_missing(self) -> int:
        return sum(high - low for low, high in self.missing)

    def missing_items(self) -> list[int]:
        """The indices of the items without a result."""
        return [index for low, high in self.missing for index in range(low, high)]

    def advice(self) -> str:
        where = f" in {self.directory}" if self.directory else ""
        if self.directory and self.save_error and not self.saved:
            return (f"Nothing of this run is saved{where}, so the missing items must be computed again: fix that "
                    f"folder (or choose another run directory), then map(fn, items, name={self.run!r}).")
        if self.directory:
            return (f"The results saved{where} are kept: results({self.run!r}) returns them, and "
                    f"map(fn, items, name={self.run!r}) on a new cluster computes only the missing items.")
        return ("This run was not saved to disk (save=False, or no run directory), so the missing "
                "items must be computed again.")

    def __str__(self) -> str:
        computed = max(self.done, self.computed or 0)
        saved = f", {self.saved} saved in {self.directory}" if self.directory else ", none saved to disk"
        if self.directory and self.save_error:
            saved += f" (saving there failed: {self.save_error})"
        if computed > self.done:
            saved += f"; {computed - self.done} were lost with the cluster before they were saved or collected"
        return (f"run {self.run!r}: {self.what}. {computed} of {self.n_items} items were computed{saved}; "
                f"{self.n_missing} have no result ({describe_ranges(self.missing)}). {self.advice()}")


class WalltimeReached(RunLost):
    """The batch job reached its walltime (its workers left before it, or were killed at it)."""

    cause = "walltime"


class JobCancelled(RunLost):
    """The batch job was cancelled (``scancel``, ``qdel``, ``bkill``) while the run was computing."""

    cause = "cancelled"


class NodeFailed(RunLost):
    """A node of the job failed; the batch system ended (and perhaps requeued) the job."""

    cause = "node failure"


class SchedulerLost(RunLost):
    """The scheduler died or cannot be reached; ``tried_seconds`` says how long reconnecting was tried."""

    cause = "scheduler lost"
    tried_seconds: float = 0.0

    def advice(self) -> str:
        return f"If the job still runs, connect again later and collect with results({self.run!r}). " + super().advice()


class SchedulerUnreachable(SchedulerLost):
    """The scheduler does not answer while its job still runs: its node is cut off or hangs.

    The scheduler may well hold the run still (it keeps computing on the workers it can reach),
    so the advice is to collect it from there once it answers again.
    """

    cause = "scheduler unreachable"

    def advice(self) -> str:
        job = f"job {self.job_id}" if self.job_id else "its job"
        return (f"The run is probably still on the scheduler, since {job} still runs: once the scheduler "
                f"answers again (the network to its node is back, its process runs again), results({self.run!r}) "
                "on this bridge or on "
                f"connect(job=...) collects every result from it. " + RunLost.advice(self))


class WorkersLeft(RunLost):
    """Every worker left while the scheduler still ran (their step was cancelled, they were killed...)."""

    cause = "workers left"


def explain(job: SubmittedJob | None, connection_lost: bool, workers_gone: bool, drained: list[dict[str, Any]],
            tried_seconds: float, address: str, near_end: bool = False,
            silent: bool = False, hanging: bool = False, refused: bool = False) -> tuple[type[RunLost], str]:
    """The cause of a loss and a sentence saying it, from the batch job's state where it is known.

    ``drained``: the ``hpcbridge-drain`` events of workers that left before the walltime;
    ``near_end``: the loss came when the job's walltime was (nearly) reached; ``silent``: the
    scheduler's address does not even refuse a connection (its node is cut off or hangs), so its
    job is not waited for to end: it would still run when the wait is over. ``hanging``: its
    address accepts connections (the kernel does that for a process that is stopped, swapping or
    stuck) but the scheduler did not answer; ``refused``: its address refuses connections, so the
    scheduler process is gone. Those two are what tells a hung scheduler from a dead one.
    """
    if job is not None and connection_lost and not silent:
        status = _final_status(job)
    else:
        status = _status(job)
    words = ""
    if status is not None:
        words = f"{status.state}" + (f", {status.reason}" if status.reason else "")
        words = f" (the batch system says: {words})"
    state = status.state if status is not None else None
    job_text = f"job {job.job_id}" if job is not None else "the job"
    reason = (status.reason or "") if status is not None else ""
    if state == "TIMEOUT" or drained or (near_end and state in (None, "COMPLETED", "COMPLETING", "TIMEOUT")):
        left = f"; {len(drained)} worker(s) left before it to lose nothing" if drained else ""
        return WalltimeReached, f"{job_text} reached its walltime{words}{left}"
    if state == "CANCELLED":
        return JobCancelled, f"{job_text} was cancelled{words}"
    if state == "NODE_FAIL" or "node" in reason.lower() and "fail" in reason.lower():
        return NodeFailed, f"a node of {job_text} failed{words}"
    if workers_gone and not connection_lost:
        return WorkersLeft, f"every worker left the cluster while its scheduler still ran{words}"
    if connection_lost and silent and state == "RUNNING":
        return SchedulerUnreachable, (f"the scheduler at {address} cannot be reached while {job_text} is still "
                                      f"RUNNING (its node is cut off the network or hangs): it did not answer for "
                                      f"{tried_seconds:.0f} s, and connections to it time out")
    if connection_lost and hanging and state in (None, "RUNNING"):
        return SchedulerUnreachable, (f"the scheduler at {address} accepts connections but has not answered for "
                                      f"{tried_seconds:.0f} s{words}: its process hangs (stopped, swapping or stuck) "
                                      "rather than died (a scheduler that died refuses connections, one whose node "
                                      "is cut off lets them time out)")
    if connection_lost:
        still = f"; {job_text} is {state}" if state in ("RUNNING", "COMPLETING") else ""
        if state == "FAILED" and workers_gone:
            return WorkersLeft, f"every worker exited, and then {job_text} stopped its scheduler{words}"
        known = "" if job is not None else " (the batch job is not known to this client, so no more is known)"
        gone = "; its address now refuses connections: the scheduler process is gone" if refused else ""
        return SchedulerLost, (f"the scheduler at {address} stopped answering; reconnecting was tried for "
                               f"{tried_seconds:.0f} s{still}{words if not still else ''}{gone}{known}")
    return WorkersLeft, f"the cluster has no workers{words}"


def _status(job: SubmittedJob | None) -> Any:
    if job is None:
        return None
    try:
        return job.status()
    except Exception:  # the batch system cannot be asked: say what else is known
        return None


def _final_status(job: SubmittedJob) -> Any:
    """The job's state, waiting up to :data:`JOB_STATE_WAIT` s for the batch system to call it ended."""
    deadline = time.monotonic() + JOB_STATE_WAIT
    status = _status(job)
    while status is not None and not status.finished and time.monotonic() < deadline:
        time.sleep(0.5)
        status = _status(job)
    return status
