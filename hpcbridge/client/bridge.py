"""The Bridge: a client attached to a running Dask cluster through its scheduler file, and the work API.

:func:`connect` reaches the cluster (:mod:`hpcbridge.client.attach` waits for the file, the
certificates and the scheduler); the :class:`Bridge` broadcasts, maps (:mod:`hpcbridge.client.runs`),
gathers (:mod:`hpcbridge.client.collect`), follows a requeued job and attaches again.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask.config
from distributed import Client, Future

from hpcbridge import functions
from hpcbridge import scheduler_file as cluster_files
from hpcbridge.addresses import address_answers
from hpcbridge.backends import BatchCommandError
from hpcbridge.backends.job import SubmittedJob
from hpcbridge.client import arguments, collect, dashboard, latency, runs, saving, stuck, watch
from hpcbridge.client import broadcast as broadcasts
from hpcbridge.client.attach import (
    FOLLOW_GRACE_SECONDS,
    POLL_SECONDS,
    PROBE_SECONDS,
    ConnectError,
    certificates_for,
    restarts_of,
    state_words,
    wait_for_scheduler,
    wait_for_scheduler_file,
)
from hpcbridge.client.losses import (  # noqa: F401
    JobCancelled,
    NodeFailed,
    RunLost,
    SchedulerLost,
    SchedulerUnreachable,
    WalltimeReached,
    WorkersLeft,
)
from hpcbridge.client.missing_modules import module_missing
from hpcbridge.client.runs import ItemError, ItemKilledWorker, ItemTimedOut, Run  # noqa: F401  (public through hpcbridge)
from hpcbridge.cluster import drain
from hpcbridge.cluster.broadcasts import Broadcast
from hpcbridge.rundir import RunDirectory, RunMismatchError  # noqa: F401  (public through hpcbridge)
from hpcbridge.scheduler_file import ClusterInfo
from hpcbridge.tls import TLSRefused, check_handshake

if TYPE_CHECKING:
    from hpcbridge.client.executor import BridgeExecutor


def connect(scheduler_file: str | os.PathLike[str] | None = None, n_workers: int = 1, timeout: float = 300.0,
            job: SubmittedJob | None = None, run_directory: str | os.PathLike[str] | None = None,
            set_as_default: bool = True) -> Bridge:
    """Attach to the cluster whose scheduler writes ``scheduler_file``; wait for ``n_workers``.

    One deadline, ``timeout`` seconds, covers all three waits: for the file (the job may still be
    queued), for the scheduler to answer, and for the workers to join. Given the submitted
    ``job`` (its file is then the default for ``scheduler_file``), a file written by another job
    is refused and a job that ends before its scheduler is up is reported at once. Without it,
    ``Bridge.job`` is the job the file names. The job's TLS certificates are found beside the
    file; a client they do not let in is refused in seconds, with the reason.
    While attached (until :meth:`Bridge.close`, e.g. the end of the ``with`` block) the bridge's
    client is Dask's default client, as a ``distributed.Client`` is: ``dask.compute``,
    ``distributed.get_client()`` and joblib's ``dask`` backend reach this cluster. Pass
    ``set_as_default=False`` to keep Dask's own default (e.g. to attach to a second cluster
    while a first one stays the default).

    ``run_directory`` is where runs are saved (default: what the job says, see
    :attr:`Bridge.run_root`).
    """
    if scheduler_file is None:
        if job is None or not job.scheduler_file:
            raise arguments.ArgumentError("scheduler_file", None, "a scheduler file's path, or job= a submitted "
                                          "job that has one")
        scheduler_file = job.scheduler_file
    scheduler_file = arguments.scheduler_file("scheduler_file", scheduler_file)
    n_workers = arguments.count("n_workers", n_workers)
    timeout = arguments.seconds("timeout", timeout)
    run_directory = arguments.directory("run_directory", run_directory)
    deadline = time.monotonic() + timeout
    info = wait_for_scheduler_file(scheduler_file, timeout, job=job)
    if job is None and info.describes_job:
        job = SubmittedJob(info.job_id, info.scheduler, str(info.path))
    certificates = certificates_for(info, job)
    wait_for_scheduler(info, certificates, deadline, timeout, job)
    security = certificates.security() if certificates else None
    remaining = max(1.0, deadline - time.monotonic())
    try:
        client = Client(info.address, timeout=f"{remaining:.0f}s", set_as_default=set_as_default, security=security)
    except (OSError, TypeError) as error:
        hint = ""
        if info.address.startswith("tcp://") and "reset by peer" in str(error):
            hint = " (a scheduler that speaks only TLS closes a plain TCP connection at once)"
        raise ConnectError(f"the scheduler at {info.address} (from {info.path}) refused the connection{hint}: "
                           f"{error}") from None
    try:
        bridge = Bridge(client, job=job, scheduler_file=info.path, run_directory=run_directory)
        bridge.wait_for_workers(n_workers, timeout=max(0.0, deadline - time.monotonic()))
    except BaseException:
        client.close()
        raise
    return bridge


class Bridge:
    """A client attached to a cluster: broadcast inputs, map work, collect results by name.

    Use it as a context manager, or call :meth:`close`; :meth:`shutdown` also ends the cluster
    (and with it the batch job). Broadcasts and runs belong to the cluster, not to this client:
    they stay after :meth:`close` until released, and another client can use them by name.
    """

    def __init__(self, client: Client, job: SubmittedJob | None = None,
                 scheduler_file: str | os.PathLike[str] | None = None,
                 run_directory: str | os.PathLike[str] | None = None) -> None:
        self.client = client
        self.job = job  # the batch job that runs the cluster, when known: its state explains a loss
        self.scheduler_file = scheduler_file
        self._run_root: str | None = str(Path(run_directory).expanduser()) if run_directory else None
        self._run_root_known = run_directory is not None
        self._settings: dict[str, Any] | None = None
        self.follow_timeout = 300.0  # how long a lost bridge waits for its requeued job to come back
        self.dashboard_shown = False  # map says the dashboard link once per bridge; True once said
        # Runs gathered (from disk) while the client was away from a scheduler that still held them:
        # released there as soon as this bridge is attached again (see _release_collected).
        self._unreleased: set[str] = set()
        # The runs this bridge started and has not collected or released, without their futures (which
        # would keep results alive): results(name) says what became of one that neither the cluster nor
        # its run directory holds any more (a job cancelled after its folder was deleted), not KeyError.
        self._started: dict[str, Run] = {}
        # The addresses of the cluster this bridge was attached to, as the client and the file say them.
        self._old_addresses = {getattr(client.scheduler, "address", None), self._file_address()}
        self._ended: str | None = None  # how this session ended the cluster (shutdown), said at once after
        # Where the dashboard listens, as the file said when this bridge attached.
        self._dashboard_info = self._file_info()
        # How often the batch system had requeued the job when this bridge attached: a higher count
        # later says "requeued" also when the job is already running again with the old file in place.
        self._restarts = restarts_of(job)
        # distributed tries to reconnect for as long as the connect timeout (30 s here), and every
        # call blocks meanwhile; a lost scheduler is reported after this bound instead.
        client._timeout = min(float(getattr(client, "_timeout", None) or watch.RECONNECT_SECONDS),
                              watch.RECONNECT_SECONDS)
        latency.quicken(client)

    @property
    def run_root(self) -> str | None:
        """The folder under which runs are saved (``<root>/<run name>/``), or None when runs are not saved.

        Given to :func:`connect`, or set by the job (``HPCBRIDGE_RUN_DIRECTORY``, from the spec's
        ``run_directory``, by default ``runs/`` beside the scheduler files; empty with
        ``save_runs=False``), or else ``runs/`` beside the scheduler file.
        """
        if not self._run_root_known and self.connected:
            configured = self.job_settings().get("run_directory")
            if configured is not None:
                self._run_root = configured or None
            elif self.scheduler_file is not None:
                self._run_root = str(Path(self.scheduler_file).expanduser().resolve().parent / "runs")
            self._run_root_known = True
        return self._run_root

    def job_settings(self) -> dict[str, Any]:
        """What the cluster's job exported: run directory, job end and margin (:func:`hpcbridge.cluster.drain.job_settings`)."""
        if self._settings is None and self.connected:
            try:
                self._settings = self.client.run_on_scheduler(drain.job_settings)
            except Exception:
                self._settings = {}
        return self._settings or {}

    def _drain_from(self) -> float | None:
        """The earliest moment (epoch seconds) a worker of this job may leave for the walltime."""
        settings = self.job_settings()
        if not settings.get("job_end"):
            return None
        margin = max(float(settings.get("margin") or 0), drain.MINIMUM_MARGIN)
        return float(settings["job_end"]) - margin * (1 + 1 / drain.STAGGER_FRACTION) - 15

    @property
    def connected(self) -> bool:
        """True while the client is attached to a live scheduler."""
        return self.client.status == "running"

    def _cluster(self) -> Client:
        """The client, or at once an error saying that the scheduler is gone (never a 30 s wait).

        A cluster whose job was requeued (preempted, or ``--requeue`` before the walltime) comes
        back under the same job id and rewrites the scheduler file: the bridge follows it
        (:meth:`follow`) instead of failing, so ``map(fn, items, name=N)`` resumes the run.
        """
        if self._ended is not None:
            raise ConnectionError(f"the cluster has ended ({self._ended}); runs saved on disk can still be read with "
                                  "results(name)")
        if not self.connected:
            self.follow()
        if self.connected and self._unreleased:
            self._release_collected()
        if not self.connected:
            raise self._lost(self._job_state())
        return self.client

    def _lost(self, state: str) -> ConnectionError:
        """The error for a scheduler this bridge lost (``state``: the job's end, from :meth:`_job_state`)."""
        address = getattr(self.client.scheduler, "address", None) or "?"
        return ConnectionError(
            f"this bridge lost its scheduler ({address}{state}); runs saved on disk can still be read with "
            f"results(name); connect again through {self.scheduler_file or 'the scheduler file'} once a "
            "cluster runs")

    def _job_state(self) -> str:
        """``: job 42 is CANCELLED`` when the cluster's job has ended, else ``""``."""
        try:
            status = self.job.status() if self.job is not None else None
        except Exception:  # noqa: BLE001 (the batch system did not answer: nothing to add)
            return ""
        return f": job {self.job.job_id} is {status.state}" if status is not None and status.finished else ""

    def _file_info(self) -> ClusterInfo | None:
        """What the scheduler file holds now, or None (no file, or half written)."""
        if self.scheduler_file is None:
            return None
        try:
            return cluster_files.read(self.scheduler_file)
        except (OSError, ValueError):
            return None

    def _file_address(self) -> str | None:
        """The address the scheduler file holds now, or None (no file, or half written)."""
        info = self._file_info()
        return info.address if info is not None else None

    def follow(self, timeout: float | None = None) -> bool:
        """Attach to the cluster that rewrote this bridge's scheduler file; True when attached.

        With the job known and requeued (seen pending again, or its old file removed), wait up to
        ``timeout`` seconds (default :attr:`follow_timeout`) for a scheduler file with a new
        address; a job still running with the old file is given 15 s; without the job, follow
        only a new address that is there already. A job that has ended, or no new address,
        leaves the bridge disconnected. Futures of the lost cluster do
        not come back; runs saved on disk do (``map(..., name=N)`` or ``results(N)``).
        """
        if self.connected or self.scheduler_file is None:
            return self.connected
        if self.reattach():
            return True
        deadline = time.monotonic() + (self.follow_timeout if timeout is None else timeout)
        # A scheduler that died in a job that keeps running (no requeue) leaves its file in place:
        # give up after this grace, unless the job is seen queued again or its file is rewritten.
        grace = time.monotonic() + FOLLOW_GRACE_SECONDS
        requeued = False
        next_status = 0.0
        while True:
            address = self._file_address()
            if self.job is None:
                if address is None or address in self._old_addresses:
                    return False
                break
            if time.monotonic() >= deadline:
                return False
            requeued = requeued or address is None  # a job starting again removes the old file first
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + 2.0
                try:
                    status = self.job.status()
                except Exception:  # the batch system did not answer: ask again
                    status = None
                if status is not None and status.finished:
                    return False
                # UNKNOWN (the batch system cannot say: e.g. another user's record) is no sign of a requeue.
                # A job that started again before this loop first asked is RUNNING with its old file
                # still there until its script replaces it (seconds, more on a busy node): its restart
                # count says it was requeued.
                requeued = requeued or (status is not None and status.state not in ("RUNNING", "UNKNOWN"))
                requeued = requeued or (status is not None and self._restarts is not None
                                        and status.restarts > self._restarts)
                fresh = address is not None and address not in self._old_addresses
                if fresh and status is not None and status.state == "RUNNING":
                    break
            if not requeued and time.monotonic() >= grace:
                return False
            time.sleep(POLL_SECONDS)
        info = self._file_info()
        try:  # a new start of the job made new certificates beside the file
            certificates = certificates_for(info, self.job) if info is not None else None
            client = Client(address, timeout="10s", set_as_default=False,
                            security=certificates.security() if certificates else None)
        except (OSError, TypeError, ConnectError):
            return False
        self._adopt(client)
        self._old_addresses |= {address, getattr(client.scheduler, "address", None)}
        self._dashboard_info = info
        self._restarts = restarts_of(self.job)
        self._settings = None  # the new start has its own job end
        return True

    def reattach(self, timeout: float = PROBE_SECONDS) -> bool:
        """Attach again to the scheduler this bridge lost, at its old address, if it answers now.

        A scheduler whose node was cut off the network for a while (shorter than the batch
        system's node-failure limit) still runs and still holds its runs, but this client gave
        up on it (:class:`~hpcbridge.client.losses.SchedulerUnreachable`). Tried only while the job
        still runs (or is not known) and the scheduler file still names that address; a probe of
        at most ``timeout`` s, so a bridge whose scheduler is gone is not held up.
        """
        if self.connected:
            return True
        info = self._file_info()
        if info is None or info.address not in self._old_addresses:
            return False
        if self.job is not None:
            try:
                if self.job.status().state != "RUNNING":
                    return False
            except Exception:  # the batch system did not answer: the probe decides
                pass
        certificates = certificates_for(info, self.job)
        try:
            if certificates is not None:
                check_handshake(info.address, certificates, timeout=timeout)
            elif not address_answers(info.address, timeout=timeout):
                return False
            client = Client(info.address, timeout=f"{max(timeout, 2.0):.0f}s", set_as_default=False,
                            security=certificates.security() if certificates else None)
        except (OSError, TypeError, TLSRefused):
            return False
        self._adopt(client)
        return True

    def _adopt(self, client: Client) -> None:
        """Use ``client`` from now on, instead of the one that lost its scheduler (closed at once).

        Its reconnect attempts are bounded as the first client's are, so a later loss is said in
        seconds, not after distributed's 30 s.
        """
        try:
            self.client.close(timeout=1)
        except Exception:
            pass
        client._timeout = min(float(getattr(client, "_timeout", None) or watch.RECONNECT_SECONDS),
                              watch.RECONNECT_SECONDS)
        self.client = client
        latency.quicken(client)
        self._release_collected()

    def _release_collected(self, name: str | None = None) -> None:
        """Let the cluster forget run ``name`` (gathered and released by the user) and those released
        while this bridge was away.

        A client that gave up on a scheduler out of reach (its node cut off) gathers a run from
        its run directory, but the scheduler still holds it: without this the run would stay
        there, holding workers' memory, after the bridge is attached again.
        """
        if name is not None:
            self._unreleased.add(name)
        if not self.connected or not self._unreleased:
            return
        try:
            for unreleased in sorted(self._unreleased):
                self.client.unpublish_dataset(unreleased)  # a name the scheduler no longer holds is no error
        except OSError:  # lost again meanwhile (a CommClosedError is an OSError): released once attached again
            return
        self._unreleased.clear()

    def wait_for_workers(self, n_workers: int, timeout: float) -> None:
        """Block until at least ``n_workers`` workers have joined, or raise :class:`ConnectError`."""
        if n_workers < 1:
            return
        try:
            self.client.wait_for_workers(n_workers, timeout=timeout)
        except TimeoutError:
            workers = self.client.scheduler_info(n_workers=-1).get("workers", {}).values()
            paused = [worker for worker in workers if worker.get("status") == "paused"]
            why = ""
            if paused:  # they joined, but take no work: distributed counts only running workers
                limit, used = paused[0].get("memory_limit") or 0, paused[0].get("metrics", {}).get("memory") or 0
                fraction = dask.config.get("distributed.worker.memory.pause", 0.8)
                why = (f"; {len(paused)} of them paused: its memory use is above Dask's pause threshold "
                       f"({fraction:.0%} of its {limit / 2**20:.0f} MiB limit; it uses {used / 2**20:.0f} MiB), so it "
                       "takes no work: give the workers more memory (--mem-per-cpu or --mem)").replace("%", " %")
            raise ConnectError(
                f"only {len(workers) - len(paused)} of {n_workers} workers joined {self.client.scheduler.address} "
                f"and run, within {timeout:.0f} s{why}"
            ) from None

    @property
    def n_workers(self) -> int:
        """How many workers are connected now; :class:`ConnectError` once the scheduler has gone."""
        info = self.client.scheduler_info(n_workers=-1)
        if "workers" not in info:
            raise ConnectError(self._gone_message())
        return len(info["workers"])

    def _gone_message(self) -> str:
        """Why the scheduler no longer answers, in the batch system's words when the job is known."""
        address = getattr(self.client.scheduler, "address", None) or f"the address in {self.scheduler_file}"
        message = f"the scheduler at {address} is gone (this client lost its connection)"
        if self.job is not None:
            try:
                message += f"; job {self.job.job_id} ({self.job.scheduler}) is {state_words(self.job.status())}"
            except (BatchCommandError, ValueError) as error:
                message += f"; the state of job {self.job.job_id} cannot be checked ({error})"
        return message

    @property
    def total_threads(self) -> int:
        """The sum of every worker's threads."""
        return sum(self.client.nthreads().values())

    @property
    def dashboard_link(self) -> str:
        """How to open the cluster's dashboard: its URL when it opens from this machine as it is, else the
        local URL and the ssh tunnel to run first (the dashboard listens on its node's 127.0.0.1 only;
        see :mod:`hpcbridge.client.dashboard`, and ``hpcbridge dashboard JOB``)."""
        return dashboard.link(self._dashboard_info, self.client.dashboard_link)

    def broadcast(self, obj: Any, name: str | None = None, shared: bool = True) -> Broadcast:
        """Send ``obj`` to every worker, once from this client; pass the handle to :meth:`map`.

        The object goes to one worker directly (never through the scheduler), and workers copy it
        from each other, including workers that join later. It stays on every worker, safe from
        Dask's Active Memory Manager, until :meth:`release` (or the cluster ends). The handle
        says how many bytes left this client and how long it took.

        ``shared`` (default): the workers on one machine map one read-only copy, so one copy per
        machine crosses the network and sits in memory; tasks must not modify it (NumPy arrays
        arrive with ``writeable=False``). ``shared=False``: every worker its own writable copy.
        """
        return broadcasts.send(self.client, obj, arguments.name("name", name), arguments.flag("shared", shared))

    def submit(self, fn: Callable[..., Any] | str, *args: Any) -> Future:
        """Run ``fn(*args)`` on a worker; broadcast handles among ``args`` are not resolved."""
        return self.client.submit(functions.resolve(fn), *args, pure=False)

    def map(self, fn: Callable[..., Any] | str, *iterables: Iterable[Any], args: Sequence[Any] | Broadcast = (),
            name: str | None = None, stack: bool = False, chunk_size: int | None = None,
            progress: bool = True, save: bool = True, item_timeout: float | None = None,
            resources: Mapping[str, float] | None = None) -> Run:
        """Run ``fn(item, *args)`` for every item, in chunks sized from measured durations.

        As in ``client.map`` and ``Executor.map``, several iterables are zipped:
        ``map(fn, a, b)`` runs ``fn(a[i], b[i], *args)`` (the iterables must have one length;
        ``client.map`` would stop silently at the shortest). Broadcasts and other constants go by
        keyword, ``args=(handle, 0.5)`` (a single handle may be given as ``args=handle``): handles
        become the broadcast objects on the workers, everything else is passed as it is.

        ``fn`` is a function or its name (``"module:function"``, ``"path/file.py:function"``).
        The run is held by the cluster under ``name`` (default ``run-<date>-<time>-<random>``)
        until collected: :meth:`gather` it, or, from any client, :meth:`results` by name.
        ``stack=True`` stacks NumPy results on the workers, chunk by chunk, so that :meth:`gather`
        joins a few arrays instead of many. ``chunk_size`` fixes the number of items per task
        instead of measuring.

        Every finished chunk is also saved in the run directory (``<run_root>/<name>/``) by the
        worker that computed it, so results outlive the cluster; ``save=False`` turns that off.
        When that folder holds a run of the same function and items (its cluster ended before it
        finished), the run **resumes**: only the items without a saved result are computed. The
        same name for another function or other items raises :class:`RunMismatchError`; a folder
        that cannot be written (full, read-only) raises :class:`~hpcbridge.rundir.RunDirectoryError`
        before anything is submitted. Chunks that fail to save later are said at gather.

        Items with a length (a list, tuple, range, array) are taken as they are; other iterables are
        read first (up to 10,000,000 items: an endless one is refused). The function, the items and
        ``args`` must pickle (they travel to the workers): what does not is refused by name
        (``items[3]``, ``args[0]``) before anything starts. Ctrl-C while map submits cancels what it
        sent and leaves no run behind.

        An item that ends its worker process (its memory limit, ``os._exit``, a crash) fails with
        :class:`~hpcbridge.client.runs.ItemKilledWorker`, which says the cause, and is not run again;
        the rest of the map goes on. ``item_timeout`` (seconds, default None: no limit) ends an
        item that runs longer, by ending its worker process (distributed's nanny starts a new one),
        and fails it with :class:`~hpcbridge.client.runs.ItemTimedOut`.

        ``resources`` (e.g. ``{"GPU": 1}``) sends every chunk only to workers that offer them
        (workers of a job with ``--gpus-per-task`` offer ``GPU``), also the chunks the tail balancer
        hands on; a map asking for what no worker offers is an :class:`~hpcbridge.client.arguments.ArgumentError`.
        """
        fn = arguments.function("fn", fn)
        resources = arguments.resources("resources", resources)
        item_timeout = arguments.positive_seconds("item_timeout", item_timeout)
        if iterables and not isinstance(iterables[0], Broadcast):
            arguments.items("items", iterables[0])
        name = arguments.run_name("name", name)
        stack = arguments.flag("stack", stack)
        chunk_size = None if chunk_size is None else arguments.count("chunk_size", chunk_size, minimum=1)
        progress = arguments.flag("progress", progress)
        save = arguments.flag("save", save)
        items, function = _zipped(fn, iterables)
        extra = _extra_arguments(args)
        _check_travels(fn, function, items, extra)  # before the name is claimed or a folder made
        client = self._cluster()
        _check_broadcasts_held(client, extra)
        if progress and not self.dashboard_shown:
            print(f"hpcbridge: dashboard {self.dashboard_link}", file=sys.stderr)
            self.dashboard_shown = True
        run = runs.start(client, function, items, extra, name=name, stack=stack, chunk_size=chunk_size,
                         root=self.run_root if save else None, item_timeout=item_timeout, resources=resources)
        run.bridge = self
        known = Run(run.name, run.n_items, list(run.bounds), [None] * len(run.bounds), run.function, run.directory)
        known.computed, known.save_errors = run.computed, run.save_errors  # shared: noted in both as they come
        self._started[run.name] = known
        return run

    def gather(self, run: Run | Sequence[Future] | str, stack: bool = False, timeout: float | None = None,
               progress: bool = True, release: bool = True) -> Any:
        """Wait for a run (or futures) and return the results in input order.

        ``stack=True`` returns one contiguous NumPy array (results stacked along a new first
        axis). ``timeout`` is in seconds; on timeout the run stays on the cluster. With
        ``release=True`` the cluster forgets the run once its results are here, and its run
        directory is deleted. A failing item raises :class:`~hpcbridge.client.runs.ItemError` with the
        item and the remote traceback. Items that have no result anywhere (the job reached its
        walltime, was cancelled, lost a node, its scheduler or its workers) raise the
        :class:`~hpcbridge.client.losses.RunLost` of that cause, which carries the results there are.
        Chunks that could not be saved in the run directory (full, deleted, read-only) are said by a
        :class:`~hpcbridge.rundir.RunDirectoryWarning` naming the folder, the reason and how many.
        """
        stack = arguments.flag("stack", stack)
        timeout = arguments.seconds("timeout", timeout, none=True)
        if not isinstance(run, (Run, str, list, tuple)) or (
                isinstance(run, (list, tuple)) and not all(isinstance(future, Future) for future in run)):
            raise arguments.ArgumentError("run", run, "a Run from map, a run's name, or a list of futures (from "
                                          "Bridge.submit)")
        if isinstance(run, str):
            run = self._find_run(run)
        if not isinstance(run, Run):
            client = self._cluster()
            try:
                values = client.gather(list(run))
            except Exception as error:
                missing = module_missing(error, "a task", getattr(client.scheduler, "address", "?"), None)
                if missing is not None:
                    raise missing from error
                raise
            return collect.join([values], stack) if stack else values
        return self._collect(run, stack, timeout, progress, release)

    def results(self, name: str, stack: bool = False, timeout: float | None = None, progress: bool = True,
                release: bool = True) -> Any:
        """Collect run ``name``: from the cluster, also when another (dead) client started it, or, when
        the cluster does not hold it (it ended, or this is a new one), from its run directory.

        Items that no cluster and no saved chunk has raise a :class:`~hpcbridge.client.losses.RunLost`
        (e.g. :class:`~hpcbridge.client.losses.WalltimeReached`) whose ``results`` holds the rest.
        """
        stack = arguments.flag("stack", stack)
        timeout = arguments.seconds("timeout", timeout, none=True)
        return self._collect(self._find_run(name), stack, timeout, progress, release)

    def _find_run(self, name: str) -> Run:
        """Run ``name`` as the cluster holds it, else as its run directory holds it (no futures); KeyError if neither."""
        if arguments.name("name", name) is None:
            raise arguments.ArgumentError("name", name, "the name of a run (Bridge.runs() lists them)")
        self.reattach()  # a scheduler that was only out of reach holds the run still
        if self.connected and name in self.client.list_datasets():
            return runs.reattach(self.client, name)
        if not self.connected and name in self._started:
            return self._started[name]  # started here, and lost with its cluster: collecting it says what is left
        root = self.run_root
        directory = RunDirectory.under(root, name) if root else None
        if directory is None or not directory.exists():
            where = f" nor in {directory.path}" if directory else " (and runs are not saved to disk)"
            held = self.client.list_datasets() if self.connected else "unknown: the scheduler is gone"
            raise KeyError(f"no run named {name!r} on this cluster (runs: {held}){where}")
        return Run.from_disk(directory)

    def _collect(self, run: Run, stack: bool, timeout: float | None, progress: bool, release: bool) -> Any:
        """Wait for ``run`` and return its values in input order (see :meth:`gather`); forget it when ``release``."""
        if not any(future is not None for future in run.futures):
            progress = False  # read from its run directory: nothing to wait for
        if not self.connected:
            self.reattach()  # a scheduler that was only out of reach holds the run still
        if self.connected and any(future is not None and future.client is not self.client for future in run.futures):
            runs.rebind(self.client, run)
        try:
            values = collect.collect(self.client, run, stack=stack, timeout=timeout, progress=progress, job=self.job,
                                     drain_from=self._drain_from())
        except RunLost as lost:
            saving.explain_lost(lost, self.client, run)  # the items computed, and why they are not on disk
            raise
        saving.warn_not_saved(self.client, run, stacklevel=3)
        if release:
            self._release_collected(run.name)
            self._started.pop(run.name, None)
            if run.directory:
                saving.remove_folder(run.directory, run.name, stacklevel=3)
        return values

    def run(self, name: str) -> Run:
        """The run held under ``name``, to follow its progress (``done_items()``) or gather it."""
        run = runs.reattach(self.client, name)
        run.bridge = self
        return run

    def runs(self) -> list[str]:
        """Names of the runs (and other published datasets) the cluster holds."""
        client = self._cluster()
        try:
            return list(client.list_datasets())
        except OSError as error:  # the connection broke in the call (the job was cancelled): said as any lost scheduler
            state = self._job_state()
            if state:  # the job has ended: said now, also while the client has not yet noticed its scheduler left
                raise self._lost(state) from error
            if self.connected:
                raise
            return list(self._cluster().list_datasets())

    def broadcasts(self) -> list[str]:
        """Names of the broadcasts the cluster holds."""
        return broadcasts.names(self.client)

    def release(self, handle: Run | Broadcast | str) -> bool:
        """Free a run's results or a broadcast's copies on the cluster (by handle or by name).

        A run's chunks still computing stop after their running items; a worker whose item does
        not end within 2 s is ended (its nanny starts a new one), so a hung item does not keep
        it busy for good.

        Returns True when something was freed. Releasing what the cluster no longer holds
        (released before, a run already collected by :meth:`gather`, or a name it never had) is
        no error: a warning says so, naming what the cluster does hold, and False is returned.
        """
        if not isinstance(handle, (Run, Broadcast, str)) or (isinstance(handle, str)
                                                             and arguments.name("handle", handle) is None):
            raise arguments.ArgumentError("handle", handle, "a Run or a Broadcast, or the name of a run or broadcast "
                                          "(Bridge.runs() and Bridge.broadcasts() list them)")
        client = self._cluster()
        held = client.list_datasets()
        if isinstance(handle, Run):
            unfinished = any(future is not None and not future.done() for future in handle.futures)
            client.cancel([future for future in handle.futures if future is not None])
            self._started.pop(handle.name, None)
            if handle.directory:
                saving.remove_folder(handle.directory, handle.name, stacklevel=2)
            if handle.name in held:
                unfinished = runs.release(client, handle.name) or unfinished
            if unfinished:
                stuck.free_workers(client, handle.name)
            if handle.name in held:
                return True
            return self._already_released(f"run {handle.name!r}", held)
        if not isinstance(handle, Broadcast) and handle in held:
            directory = runs.reattach(client, handle).directory
            if runs.release(client, handle):
                stuck.free_workers(client, handle)
            self._started.pop(handle, None)
            if directory:
                saving.remove_folder(directory, handle, stacklevel=2)
            return True
        name = handle.name if isinstance(handle, Broadcast) else handle
        try:
            broadcasts.release(client, name)
        except KeyError:
            what = f"broadcast {name!r}" if isinstance(handle, Broadcast) else f"run or broadcast {name!r}"
            return self._already_released(what, held)
        return True

    def _already_released(self, what: str, runs: Sequence[str]) -> bool:
        warnings.warn(f"{what} is not on this cluster (already released or collected, or never there): nothing "
                      f"to release; it holds runs {sorted(runs)} and broadcasts {sorted(self.broadcasts())}",
                      stacklevel=3)
        return False

    def executor(self, progress: bool = False) -> BridgeExecutor:
        """A ``concurrent.futures.Executor`` on this cluster whose ``map`` uses hpcbridge's chunking.

        ``with bridge.executor() as ex: squares = list(ex.map(f, range(254)))``; see
        :class:`~hpcbridge.client.executor.BridgeExecutor`.
        """
        from hpcbridge.client.executor import BridgeExecutor

        return BridgeExecutor(self, progress=progress)

    def joblib(self, **options: Any) -> AbstractContextManager[None]:
        """``with bridge.joblib(): joblib.Parallel()(...)`` runs joblib's work on this cluster.

        joblib's ``dask`` backend with this bridge's client; ``options`` go to
        ``joblib.parallel_config``. Needs ``pip install joblib``.
        """
        from hpcbridge.client.executor import joblib_on

        return joblib_on(self, **options)

    def close(self) -> None:
        """Detach this client; the cluster keeps running, with its broadcasts and runs."""
        self.client.close(timeout=5 if self.connected else 1)

    def shutdown(self) -> None:
        """End the cluster: the scheduler and its workers exit, and so does the batch job.

        The scheduler file and the job's certificates are removed (run directories are kept).
        The workers leave first, then the scheduler, so that the job's log of a planned end
        holds no error (:mod:`hpcbridge.cluster.ending`).
        """
        from hpcbridge.cluster.ending import WAIT_SECONDS, close_workers_first

        with contextlib.suppress(Exception):  # a scheduler gone, hung or refusing: the shutdown below still ends it
            # run_on_scheduler hands callback_timeout to Client.sync: the question is bounded, as every other
            self.client.run_on_scheduler(close_workers_first, callback_timeout=WAIT_SECONDS + 10)
        self.client.shutdown()
        self._ended = "shutdown() ended it"
        if self.scheduler_file is not None:
            cluster_files.remove(self.scheduler_file, job_id=self.job.job_id if self.job else None)

    def __repr__(self) -> str:
        """Where the bridge is attached, its job, and (while attached) its workers and dashboard."""
        address = getattr(self.client.scheduler, "address", None) or "?"
        job = f", job {self.job.job_id} ({self.job.scheduler})" if self.job is not None else ""
        if not self.connected:
            return f"<Bridge {address}{job}: not attached ({self.client.status})>"
        try:
            threads = self.client.nthreads()
        except Exception as error:  # the scheduler went away just now
            return f"<Bridge {address}{job}: {type(error).__name__}>"
        return (f"<Bridge {address}{job}: {len(threads)} workers, {sum(threads.values())} threads, "
                f"dashboard {self.dashboard_link}>")

    def _repr_html_(self) -> str:
        """A notebook's view: the scheduler, the job, workers, threads, memory and the dashboard link."""
        from html import escape

        from dask.utils import format_bytes

        address = getattr(self.client.scheduler, "address", None) or "?"
        rows = [("Scheduler", escape(address))]
        if self.job is not None:
            rows.append(("Job", escape(f"{self.job.job_id} ({self.job.scheduler})")))
        try:
            workers = self.client.scheduler_info(n_workers=-1)["workers"].values() if self.connected else None
        except Exception:  # the scheduler went away just now
            workers = None
        if workers is None:
            rows.append(("State", escape(f"not attached ({self.client.status})")))
        else:
            link = self.dashboard_link
            url = link.split(" ", 1)[0]
            rows += [("Workers", str(len(workers))), ("Threads", str(sum(w.get("nthreads", 0) for w in workers))),
                     ("Memory", format_bytes(sum(w.get("memory_limit") or 0 for w in workers))),
                     ("Dashboard", f'<a href="{escape(url)}" target="_blank">{escape(url)}</a>'
                                   + (escape(link[len(url):]) if link != url else ""))]
        cells = "".join(f'<tr><th style="text-align: left;">{name}</th><td style="text-align: left;">{value}</td></tr>'
                        for name, value in rows)
        return f"<div><strong>hpcbridge Bridge</strong><table>{cells}</table></div>"

    def __enter__(self) -> Bridge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _zipped(fn: Callable[..., Any] | str, iterables: Sequence[Iterable[Any]]) -> tuple[Sequence[Any], Callable[..., Any]]:
    """The items and the per-item function of ``map(fn, *iterables)``; refuses what is not items."""
    if not iterables:
        raise TypeError("map() needs at least one iterable of items: bridge.map(fn, items)")
    for position, iterable in enumerate(iterables, start=2):
        if isinstance(iterable, Broadcast):
            raise TypeError(f"map: argument {position} is broadcast {iterable.name!r}, not an iterable of items; "
                            "pass broadcasts and constants by keyword: bridge.map(fn, items, args=(handle,))")
        if not isinstance(iterable, Iterable) or isinstance(iterable, (str, bytes)):
            raise TypeError(f"map: argument {position} is a {type(iterable).__name__}, not an iterable of items; "
                            "pass constants by keyword: bridge.map(fn, items, args=(value,))")
    sequences = [_as_sequence(iterable) for iterable in iterables]
    function = functions.resolve(fn)
    if len(sequences) == 1:
        return sequences[0], function
    lengths = [len(sequence) for sequence in sequences]
    if len(set(lengths)) > 1:
        raise ValueError(f"map: the iterables have different lengths ({', '.join(map(str, lengths))}); zipped "
                         "items need one length (client.map would stop at the shortest without a word)")
    return list(zip(*sequences)), functions.SpreadItems(function)


def _check_travels(fn: Any, function: Callable[..., Any], items: Sequence[Any], extra: Sequence[Any]) -> None:
    """Refuse a function, an extra argument or an item that cannot be sent to the workers, by name."""
    arguments.picklable("fn", function, given=fn)
    for position, argument in enumerate(extra):
        if not isinstance(argument, Broadcast):
            arguments.picklable(f"args[{position}]", argument)
    arguments.picklable_items("items", items)


def _check_broadcasts_held(client: Client, extra: Sequence[Any]) -> None:
    """Refuse a broadcast handle the cluster does not hold (released, or never sent there)."""
    handles = [(position, a) for position, a in enumerate(extra) if isinstance(a, Broadcast)]
    if not handles:
        return
    held = broadcasts.names(client)
    for position, handle in handles:
        if handle.name not in held:
            raise arguments.ArgumentError(f"args[{position}]", handle, "a handle of a broadcast this cluster holds "
                                          f"(it holds {sorted(held) or 'none'}); broadcast it first")


def _extra_arguments(args: Sequence[Any] | Broadcast) -> tuple[Any, ...]:
    if isinstance(args, Broadcast):
        return (args,)
    if not isinstance(args, (tuple, list)):
        raise TypeError(f"map: args must be a tuple of extra arguments, e.g. args=(handle, 0.5), not a "
                        f"{type(args).__name__}")
    return tuple(args)


def _as_sequence(items: Iterable[Any]) -> Sequence[Any]:
    if isinstance(items, (list, tuple, range)):
        return items
    try:
        import numpy as np

        if isinstance(items, np.ndarray):
            return items  # slices stay arrays: one buffer per chunk, not one object per item
    except ImportError:
        pass
    return arguments.bounded_items("items", items)  # a generator is read, an endless one refused
