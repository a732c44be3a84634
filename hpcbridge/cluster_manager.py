"""``hpcbridge.Cluster``: Dask's cluster manager for an hpcbridge batch job.

What dask-jobqueue, dask-gateway and ``LocalCluster`` teach, on an hpcbridge job::

    cluster = hpcbridge.Cluster(scheduler="slurm", nodes=2, ntasks_per_node=4, walltime="2h")
    client = distributed.Client(cluster)        # TLS with the job's own certificates
    cluster.scale(16)                           # worker jobs that join this cluster
    cluster.adapt(minimum=8, maximum=40)        # ... as the work needs them
    bridge = cluster.bridge()                   # hpcbridge's map, broadcast, runs by name
    cluster.close()                             # cancels the job and every worker job

It is a subclass of ``distributed.deploy.Cluster``, so Dask's notebook widget, ``adapt``,
``get_logs``, ``wait_for_workers`` and dask-labextension work on it. The options are those of
``hpcbridge submit`` with the same site profile (:meth:`~hpcbridge.job.spec.JobSpec.from_config`);
the job is submitted as ``hpcbridge submit`` does (:mod:`hpcbridge.job.submit`) and the scheduler
waited for as :func:`hpcbridge.connect` does (:mod:`hpcbridge.client.attach`). ``scale`` adds
workers as worker-only jobs that join the cluster (:mod:`hpcbridge.job.join`, ``hpcbridge scale``)
and removes them by cancelling those jobs, the most recent first, after their workers retired
(their data moves to the others). The cluster job's own workers stay until ``close``.

Why it sits above both ``job/`` and ``client/``: it submits (the login node's side) and attaches
(the client's side), as the command line does, so neither of them may import it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from distributed.core import Status, rpc
from distributed.deploy import Cluster as DaskCluster
from distributed.deploy.adaptive import Adaptive
from distributed.protocol.pickle import dumps
from distributed.utils import Log, Logs

from hpcbridge.backends.job import SubmittedJob
from hpcbridge.client.arguments import ArgumentError
from hpcbridge.cluster import job_identity
from hpcbridge.job.spec import JobSpec, SpecError

if TYPE_CHECKING:
    from distributed.security import Security

    from hpcbridge.client.bridge import Bridge

LOG_LINES = 200  # the last lines of each batch job's output that get_logs shows


class Cluster(DaskCluster):
    """A Dask cluster in a batch job of its own, started (or found) by hpcbridge.

    ``Cluster(scheduler="slurm", nodes=2, ...)`` takes every job option of ``hpcbridge submit``
    (``ntasks_per_node``, ``cpus_per_task``, ``mem_per_cpu``, ``walltime``, ``account``, ``queue``,
    ``interface``, ``modules``, ``setup``, ``python``, ...; values as typed on the command line or
    as numbers), with the site profile in Dask's config filling the rest; a bad value is a
    :class:`~hpcbridge.job.spec.SpecError` naming it, before anything is submitted. It submits
    the job and waits up to ``timeout`` seconds for its scheduler (the job may queue); if that
    fails the job is cancelled and the error says why. The cluster job's workers join on their own
    (``cluster.wait_for_workers(n)`` waits for them).

    ``scale(n)`` and ``adapt(minimum, maximum)`` count workers, as in Dask: workers beyond the
    cluster job's own come in worker jobs of ``workers_per_job`` workers each (default: the
    cluster's ``ntasks_per_node``) on one node, with the cluster's options, changed by
    ``worker_options`` (e.g. ``{"walltime": "30m", "queue": "short"}``). ``close()`` (also at the end
    of a ``with`` block and when the interpreter exits) cancels the job and its worker jobs, unless
    ``shutdown_on_close=False``; :meth:`from_job` attaches to a running cluster and leaves it
    running on close by default.
    """

    def __init__(self, scheduler: str | None = None, *, workers_per_job: int | None = None,
                 worker_options: Mapping[str, Any] | None = None, timeout: float = 300.0,
                 profile_modules: bool = True, shutdown_on_close: bool = True, asynchronous: bool = False,
                 loop: Any = None, quiet: bool = False, name: str | None = None, **job_options: Any) -> None:
        spec = JobSpec.from_config({**job_options, "scheduler": scheduler}, profile_modules=profile_modules)
        if spec.mode == "array":
            raise SpecError("mode", spec.mode, "scheduler-file or mpi for a Cluster (a job array runs no Dask cluster)")
        self._setup(spec, None, workers_per_job, worker_options, timeout, shutdown_on_close)
        self._named = name is not None
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet, name=name)
        self._begin()

    @classmethod
    def from_job(cls, job_id: str | int, scheduler: str | None = None, *, workers_per_job: int = 1,
                 worker_options: Mapping[str, Any] | None = None, timeout: float = 60.0,
                 shutdown_on_close: bool = False, asynchronous: bool = False, loop: Any = None,
                 quiet: bool = False, name: str | None = None) -> Cluster:
        """Attach to the running cluster of job ``job_id`` (submitted by hpcbridge from this account,
        or running with the default scheduler file), waiting up to ``timeout`` s for its scheduler.

        ``close()`` leaves the cluster running unless ``shutdown_on_close=True``. Worker jobs
        for ``scale``/``adapt`` have ``workers_per_job`` workers and the site profile's options,
        changed by ``worker_options``; the worker jobs that already joined it count as this
        Cluster's (``scale`` down cancels them too).
        """
        from hpcbridge.job import join

        try:
            job = join.cluster_job(str(job_id), scheduler)
        except join.JoinError as error:
            raise ValueError(str(error)) from None
        worker_values = {**(worker_options or {}), "scheduler": job.scheduler}
        spec = JobSpec.from_config(worker_values)
        self = cls.__new__(cls)
        self._setup(None, job, workers_per_job, None, timeout, shutdown_on_close)
        self.worker_job_spec = _worker_spec(spec, workers_per_job, {})
        self._jobs = [joined for joined in job.joined() if joined.alive()[0]]
        self._named = True
        DaskCluster.__init__(self, asynchronous=asynchronous, loop=loop, quiet=quiet, name=name or str(job.job_id))
        self._begin()
        return self

    def _setup(self, spec: JobSpec | None, job: SubmittedJob | None, workers_per_job: int | None,
               worker_options: Mapping[str, Any] | None, timeout: float, shutdown_on_close: bool) -> None:
        """The state both constructors share (set before Dask's own, which may call back into it)."""
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
            raise ArgumentError("timeout", timeout, "seconds, a positive number")
        self.spec = spec
        self.job = job
        self.timeout = float(timeout)
        self.shutdown_on_close = bool(shutdown_on_close)
        self.security: Security | None = None
        self.worker_job_spec = _worker_spec(spec, workers_per_job, worker_options) if spec is not None else None
        self._jobs: list[SubmittedJob] = []  # the worker jobs that joined, oldest first
        self._info: Any = None  # what the scheduler file says
        self._lock: asyncio.Lock | None = None
        self._bridges: weakref.WeakSet[Bridge] = weakref.WeakSet()
        self._finalizer: weakref.finalize | None = None
        self._found_own_workers = 0
        self._seen_jobs: set[str] = set()  # the jobs whose workers were seen to join

    def _begin(self) -> None:
        """Start now, unless the caller awaits the cluster (``await Cluster(..., asynchronous=True)``)."""
        if self.called_from_running_loop:
            return
        self._loop_runner.start()
        try:
            self.sync(self._start)
        except BaseException:
            self._loop_runner.stop()
            raise

    def __await__(self):
        async def start() -> Cluster:
            if self.status == Status.created:
                await self._start()
            return self

        return start().__await__()

    # --- start and end ----------------------------------------------------------------------

    async def _start(self) -> None:
        self.status = Status.starting
        self._lock = asyncio.Lock()
        submitted_here = self.job is None
        try:
            if submitted_here:
                await asyncio.to_thread(self._submit)
            info = await asyncio.to_thread(self._wait_for_scheduler)
        except BaseException as error:
            self.status = Status.closed  # nothing of it is left to close
            if not submitted_here or self.job is None:
                raise
            running = (await asyncio.to_thread(self.job.alive))[0]
            await self._cancel_after_failed_start()
            if running and isinstance(error, Exception):
                raise type(error)(f"{error}; hpcbridge cancelled job {self.job.job_id}, which this Cluster started") \
                    from None
            raise
        self._info = info
        self.scheduler_comm = rpc(info.address, connection_args=self._connection_args())
        try:
            await super()._start()
        except BaseException:
            await self.scheduler_comm.close_rpc()
            self.status = Status.closed
            if submitted_here:
                await self._cancel_after_failed_start()
            raise
        if self.spec is None:
            owners = await self._worker_jobs()
            self._found_own_workers = sum(1 for owner in owners.values() if owner == str(self.job.job_id))
        self._log(f"hpcbridge: job {self.job.job_id}'s scheduler is at {info.address}")

    async def _cancel_after_failed_start(self) -> None:
        await asyncio.to_thread(_cancel_quietly, self.job, self._jobs)
        if self._finalizer is not None:
            self._finalizer.detach()

    def _submit(self) -> None:
        from hpcbridge.job import submit as jobs

        self.job = jobs.submit(self.spec)
        if not self._named:
            self.name = str(self.job.job_id)
        self._log(f"hpcbridge: submitted {self.job.scheduler} job {self.job.job_id}; waiting for its scheduler "
                  f"(at most {self.timeout:g} s)")
        if self.shutdown_on_close:  # a forgotten cluster ends with this process, not at its walltime
            self._finalizer = weakref.finalize(self, _cancel_quietly, self.job, self._jobs)

    def _wait_for_scheduler(self) -> Any:
        """Wait for the job's scheduler file and for its scheduler to answer; set :attr:`security`."""
        import time

        from hpcbridge.client.attach import certificates_for, wait_for_scheduler, wait_for_scheduler_file

        deadline = time.monotonic() + self.timeout
        info = wait_for_scheduler_file(self.job.scheduler_file, self.timeout, job=self.job)
        certificates = certificates_for(info, self.job)
        wait_for_scheduler(info, certificates, deadline, self.timeout, self.job)
        if certificates is not None:
            self.security = certificates.security()
        return info

    def _connection_args(self) -> dict[str, Any]:
        from distributed.security import Security

        return (self.security or Security()).get_connection_args("client")

    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        await super()._close()
        if self.shutdown_on_close and self.job is not None:
            await asyncio.to_thread(_cancel_quietly, self.job, self._jobs)
            self._log(f"hpcbridge: cancelled job {self.job.job_id} and its worker jobs")
        if self._finalizer is not None:
            self._finalizer.detach()

    def close(self, timeout: float | None = None) -> Any:
        """End the cluster: cancel its job and every worker job (with ``shutdown_on_close``, the default
        for a cluster started here), else only detach. Run directories are kept."""
        result = super().close(timeout)
        if not self.asynchronous:
            self._loop_runner.stop()
        return result

    def shutdown(self) -> Any:
        """Cancel the job and its worker jobs, also for a cluster attached with :meth:`from_job`."""
        self.shutdown_on_close = True
        return self.close()

    # --- scaling -----------------------------------------------------------------------------

    @property
    def own_workers(self) -> int:
        """How many workers the cluster's own job runs (they stay until :meth:`close`); for a cluster
        attached with :meth:`from_job`, how many had joined from its job then."""
        return self.spec.workers if self.spec is not None else self._found_own_workers

    def _expected(self) -> int:
        return self.own_workers + len(self._jobs) * self.worker_job_spec.workers

    @property
    def plan(self) -> set[str]:
        """The workers asked for: those that joined, and placeholders for those still to come."""
        observed = self.observed
        missing = max(0, self._expected() - len(observed))
        return observed | {f"pending-{index}" for index in range(missing)}

    @property
    def requested(self) -> set[str]:
        return self.plan

    def scale(self, n: int) -> Any:
        """Scale to ``n`` workers: submit worker jobs that join this cluster, or cancel the most recent
        ones (their workers retire first, handing their data to the others).

        Workers come in jobs of :attr:`worker_job_spec`'s size, so the cluster may get up to one
        job's worth more than ``n``; it never goes below the cluster job's own workers.
        """
        if isinstance(n, bool) or not isinstance(n, int) and not (isinstance(n, float) and n.is_integer()) or n < 0:
            raise ArgumentError("n", n, "a number of workers, a whole number >= 0")
        if self.asynchronous:
            return asyncio.ensure_future(self._scale(int(n)))
        return self.sync(self._scale, int(n))

    async def _scale(self, n: int) -> None:
        async with self._lock:
            if self.status != Status.running:
                return
            per_job = self.worker_job_spec.workers
            wanted = max(0, math.ceil((n - self.own_workers) / per_job))
            if n < self.own_workers and wanted == 0 and not self._jobs:
                self._log(f"hpcbridge: job {self.job.job_id} keeps its own {self.own_workers} worker(s) until close()")
            while len(self._jobs) < wanted:
                await asyncio.to_thread(self._add_job)
            if len(self._jobs) > wanted:
                await self._remove_jobs(self._jobs[wanted:])

    def _add_job(self) -> None:
        from hpcbridge.job import join

        job = join.join(self.job, self.worker_job_spec)
        self._jobs.append(job)
        self._log(f"hpcbridge: submitted worker job {job.job_id} ({self.worker_job_spec.workers} worker(s))")

    async def _remove_jobs(self, jobs: list[SubmittedJob]) -> None:
        """Retire the workers of ``jobs``, then cancel the jobs, the most recent first."""
        owners = await self._worker_jobs()
        leaving = [address for address, owner in owners.items() if owner in {job.job_id for job in jobs}]
        if leaving:
            try:
                await self.scheduler_comm.retire_workers(workers=leaving, close_workers=True, remove=True)
            except Exception as error:  # they go with their jobs all the same
                self._log(f"hpcbridge: retiring workers {leaving} failed ({error}); cancelling their jobs")
        for job in reversed(jobs):
            await asyncio.to_thread(_cancel_quietly, job, [])
            self._jobs.remove(job)
            self._log(f"hpcbridge: cancelled worker job {job.job_id}")

    async def _worker_jobs(self) -> dict[str, str | None]:
        """Each worker's batch job, as the worker's environment says (None where it cannot tell)."""
        message = {"op": "run", "function": dumps(job_identity.job_id), "args": dumps((self.job.scheduler,)),
                   "kwargs": dumps({}), "wait": True}
        try:
            replies = await self.scheduler_comm.broadcast(msg=message, on_error="return")
        except Exception:
            return {}
        owners = {address: reply.get("result") for address, reply in replies.items()
                  if isinstance(reply, dict) and reply.get("status") == "OK"}
        self._seen_jobs.update(owner for owner in owners.values() if owner)
        return owners

    async def scale_down(self, workers: list[str]) -> None:
        """Adaptive's end of a scale-down, after it retired ``workers`` (names): cancel the worker jobs
        whose workers joined and none remain, and jobs still to come when placeholders are named."""
        async with self._lock:
            pending = sum(1 for name in workers if str(name).startswith("pending-"))
            owners = await self._worker_jobs()
            names = {address: info.get("name", address) for address, info in self.scheduler_info["workers"].items()}
            closing = set(map(str, workers))
            remaining = {owner for address, owner in owners.items() if str(names.get(address, address)) not in closing}
            done = [job for job in self._jobs if job.job_id in self._seen_jobs and job.job_id not in remaining]
            waiting = [job for job in self._jobs if job.job_id not in self._seen_jobs]
            done += waiting[len(waiting) - min(len(waiting), math.ceil(pending / self.worker_job_spec.workers)):]
            for job in reversed(done):
                await asyncio.to_thread(_cancel_quietly, job, [])
                self._jobs.remove(job)
                self._log(f"hpcbridge: cancelled worker job {job.job_id}")

    def adapt(self, *args: Any, minimum: int = 0, maximum: float = math.inf, **kwargs: Any) -> Adaptive:
        """Add and cancel worker jobs as the work needs (Dask's ``Adaptive``), between ``minimum`` and
        ``maximum`` workers; the cluster job's own workers are never retired by it."""
        kwargs.setdefault("Adaptive", _KeepOwnWorkers)
        return super().adapt(*args, minimum=minimum, maximum=maximum, **kwargs)

    # --- what it shows ---------------------------------------------------------------------

    @property
    def scheduler_file(self) -> str | None:
        """The scheduler file of the cluster's job (for ``hpcbridge.connect``, MATLAB, other clients)."""
        return self.job.scheduler_file if self.job is not None else None

    @property
    def worker_jobs(self) -> list[SubmittedJob]:
        """The worker jobs this Cluster added (or found joined), oldest first."""
        return list(self._jobs)

    @property
    def dashboard_link(self) -> str:
        """The dashboard's URL with its token: the one that opens here, else the local end of the ssh
        tunnel that ``hpcbridge dashboard JOB`` prints (the dashboard listens on its node's 127.0.0.1)."""
        from hpcbridge.client.dashboard import access

        if self._info is None or self._info.dashboard is None:
            return super().dashboard_link
        try:
            reach = access(self._info)
        except LookupError:
            return super().dashboard_link
        return reach.here or reach.url

    def job_script(self, worker_job: bool = False) -> str:
        """The batch script of the cluster's job, or (``worker_job=True``) of the worker jobs ``scale`` submits."""
        from hpcbridge.job import join
        from hpcbridge.job.render import render_script

        if worker_job:
            return join.render_join_script(self.job, join.join_spec(self.job, self.worker_job_spec))
        if self.spec is None:
            raise ValueError(f"this Cluster attached to job {self.job.job_id}, whose script it did not render: "
                             "its batch system keeps it (e.g. scontrol write batch_script JOB)")
        return render_script(self.spec)

    async def _get_logs(self, cluster: bool = True, scheduler: bool = True, workers: bool = True) -> Logs:
        """Dask's logs (this object's, the scheduler's, the workers'), then the last lines of each batch job's output."""
        logs = await super()._get_logs(cluster=cluster, scheduler=scheduler, workers=workers)
        if cluster:
            for job in [self.job, *self._jobs]:
                path = await asyncio.to_thread(job.log_path)
                try:
                    text = await asyncio.to_thread(path.read_text, errors="replace") if path is not None else ""
                except OSError:
                    text = ""
                logs[f"Job {job.job_id} ({path})"] = Log("".join(text.splitlines(keepends=True)[-LOG_LINES:]))
        return logs

    def _repr_html_(self, cluster_status: str | None = None) -> str:
        from html import escape

        rows = [f"<strong>Job:</strong> {escape(str(self.job.job_id))} ({escape(self.job.scheduler)})"
                if self.job is not None else "<strong>Job:</strong> not submitted yet",
                f"<strong>Worker jobs:</strong> {len(self._jobs)}"]
        status = "<tr>" + "".join(f'<td style="text-align: left;">{row}</td>' for row in rows) + "</tr>"
        return super()._repr_html_(cluster_status=status + (cluster_status or ""))

    def bridge(self, n_workers: int = 0, timeout: float = 60.0) -> Bridge:
        """hpcbridge's API on this cluster (``map``, ``broadcast``, runs by name): a :class:`~hpcbridge.Bridge`
        attached through the job's scheduler file, waiting for ``n_workers``; closed with the cluster."""
        from hpcbridge.client.bridge import connect

        bridge = connect(self.job.scheduler_file, n_workers=n_workers, timeout=timeout, job=self.job)
        self._bridges.add(bridge)
        return bridge


class _KeepOwnWorkers(Adaptive):
    """Dask's Adaptive, except for which workers go: those of the most recent worker jobs first, never the
    cluster job's own (their job would end with them, and the cluster with it)."""

    async def workers_to_close(self, target: int) -> list[str]:
        cluster: Cluster = self.cluster
        owners = await cluster._worker_jobs()
        order = {job.job_id: index for index, job in enumerate(cluster.worker_jobs)}
        joined = sorted((address for address, owner in owners.items() if owner in order),
                        key=lambda address: -order[owners[address]])
        names = {address: str(info.get("name", address)) for address, info in cluster.scheduler_info["workers"].items()}
        surplus = max(0, len(self.plan) - target)
        return [names.get(address, address) for address in joined[:surplus]]


def _worker_spec(spec: JobSpec, workers_per_job: int | None, options: Mapping[str, Any] | None) -> JobSpec:
    """The spec of the worker jobs that ``scale`` submits: the cluster's, one node of
    ``workers_per_job`` workers, changed by ``options``; refused at once when it cannot join."""
    from hpcbridge.job.join import JOIN_SCHEDULERS

    if spec.scheduler not in JOIN_SCHEDULERS:
        raise SpecError("scheduler", spec.scheduler, "slurm, pbs, lsf, sge or local for a Cluster (worker jobs join it)")
    if workers_per_job is not None and (isinstance(workers_per_job, bool) or not isinstance(workers_per_job, int)
                                        or workers_per_job < 1):
        raise SpecError("workers_per_job", workers_per_job, "a whole number >= 1")
    options = dict(options or {})
    for name in ("scheduler", "scheduler_file", "mode", "ntasks"):
        if name in options:
            raise SpecError(name, options[name], f"no {name} in worker_options (the cluster's is used)")
    return dataclasses.replace(spec, mode="scheduler-file", requeue=False, client_script=None, client_args=(),
                               nodes=1, ntasks_per_node=workers_per_job or spec.ntasks_per_node, **options)


def _cancel_quietly(job: SubmittedJob, worker_jobs: list[SubmittedJob]) -> None:
    """Cancel ``worker_jobs`` (most recent first), then ``job`` and the rest that joined it; errors are
    printed, not raised (this runs on close, and at interpreter exit)."""
    import sys

    for each in [*reversed(worker_jobs), job]:
        try:
            each.cancel()
        except Exception as error:  # the batch system refused or did not answer
            print(f"hpcbridge: could not cancel job {each.job_id}: {error}", file=sys.stderr)
