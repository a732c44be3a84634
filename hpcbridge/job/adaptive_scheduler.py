"""The program inside an adaptive cluster's scheduler job: a Dask scheduler and dask-jobqueue adapting.

``templates/<scheduler>/adaptive.sh.j2`` runs ``python -m hpcbridge.job.adaptive_scheduler``. It starts
dask-jobqueue's ``SLURMCluster``/``PBSCluster``/``LSFCluster`` here (the scheduler lives in
this job, not on the login node), writes the scheduler file like every hpcbridge cluster, and
lets distributed's :class:`~distributed.deploy.Adaptive` submit and cancel worker jobs, with
what a shared batch system needs on top (:class:`BatchAdaptive`):

- a worker job is never cancelled in its first ``min_job_age`` seconds;
- at most ``max_pending`` worker jobs wait in the queue at once (their state is asked of the
  batch system through hpcbridge's backend);
- a worker job whose workers will drain before its walltime (:mod:`hpcbridge.cluster.drain`) gets a
  replacement job ``replace_lead`` seconds ahead (or twice the slowest start seen, if longer),
  while the work still wants it, so that the cluster does not shrink when they leave;
- a worker job that ends on its own before its workers joined, or soon after, counts as a
  failure at start; after ``failure_limit`` of them no more jobs are added (dask-jobqueue
  would resubmit them forever), and the log and the status file say why.

The status file (``scheduler.adaptive.json`` beside the scheduler file) lists the worker jobs
for ``hpcbridge status``. The program ends when a client calls ``shutdown()``, after
``idle_timeout`` without tasks (the scheduler's own ``idle_timeout``), or on SIGTERM (a
cancel, the walltime); every worker job is cancelled then.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcbridge import scheduler_file as cluster_files
from hpcbridge.backends import JobStatus, get_backend
from hpcbridge.backends.base import statuses
from hpcbridge.job.adaptive import (
    AdaptiveSettings,
    PatientAdaptive,
    job_name_of,
    status_file_for,
    worker_job_options,
    worker_log_dir,
)
from hpcbridge.job.spec import JobSpec
from hpcbridge.leaving import LEAVE_METRIC
from hpcbridge.private_files import write_private_file

logger = logging.getLogger("hpcbridge.adaptive")
_KEEP_FINISHED = 50


@dataclass
class WorkerJob:
    """One worker job as the cluster follows it."""

    name: str  # dask-jobqueue's name for the job; its workers are NAME or NAME-i
    job_id: str
    submitted: float
    state: str = "PENDING"
    reason: str | None = None
    joined: float | None = None  # when its first worker joined the scheduler


class JobLedger:
    """The worker jobs of this cluster, their states in the batch system's words, and failures at start."""

    def __init__(self, settings: AdaptiveSettings, job_id: str, scheduler: str, status_file: Path) -> None:
        self.settings = settings
        self.job_id = job_id
        self.scheduler = scheduler
        self.backend = get_backend(scheduler)
        self.status_file = status_file
        self.jobs: dict[str, WorkerJob] = {}
        self.finished: list[dict[str, Any]] = []
        self.failed: list[dict[str, Any]] = []
        self.stopped: str | None = None
        self.workers = 0
        self.leaving: set[str] = set()
        self.slowest_start = 0.0  # the longest a job took from submission to its first worker

    def pending(self) -> int:
        """Worker jobs waiting in the queue (a job just submitted counts as pending)."""
        return sum(job.state == "PENDING" for job in self.jobs.values())

    def age(self, name: str) -> float:
        """Seconds since the job called ``name`` was submitted (infinite when unknown)."""
        job = self.jobs.get(name)
        return math.inf if job is None else time.time() - job.submitted

    async def refresh(self, cluster: Any) -> None:
        """Follow the cluster's jobs: new ones, ones it cancelled, ones that ended on their own."""
        now = time.time()
        for name, job in list(cluster.workers.items()):
            if name in cluster.worker_spec and getattr(job, "job_id", None) and name not in self.jobs:
                self.jobs[name] = WorkerJob(name=name, job_id=str(job.job_id), submitted=now)
                logger.info("worker job %s submitted (%s)", job.job_id, name)
        for name in [name for name in self.jobs if name not in cluster.worker_spec]:
            job = self.jobs.pop(name)
            self._finish(job, "cancelled by the cluster (not needed)")
        joined = {job_name_of(str(ws.name), cluster.worker_spec) for ws in cluster.scheduler.workers.values()}
        self.workers = len(cluster.scheduler.workers)
        for job in self.jobs.values():
            if job.joined is None and job.name in joined:
                job.joined = now
                self.slowest_start = max(self.slowest_start, now - job.submitted)
        self.leaving = self._leaving(cluster, now)
        asked = [(job.name, job.job_id) for job in self.jobs.values()]
        states = await asyncio.get_running_loop().run_in_executor(None, self._states, asked)
        ended = []
        for name, status in states.items():
            job = self.jobs.get(name)
            if job is None:
                continue
            job.state, job.reason = status.state, status.reason
            if status.finished or status.state == "UNKNOWN":
                ended.append(name)
                self._ended_on_its_own(self.jobs.pop(name), status, now)
        if ended:
            await cluster.scale_down(ended)  # dask-jobqueue forgets them; adapt may submit others
        self.write()

    def _leaving(self, cluster: Any, now: float) -> set[str]:
        """Jobs whose workers have left or start to drain within the lead time: they need a replacement."""
        lead = max(self.settings.replace_lead, 2 * self.slowest_start) + self.settings.interval
        leave_at: dict[str, float] = {}
        for ws in cluster.scheduler.workers.values():
            name = job_name_of(str(ws.name), cluster.worker_spec)
            value = ws.metrics.get(LEAVE_METRIC)
            leave_at[name] = min(leave_at.get(name, math.inf), value if isinstance(value, (int, float)) else math.inf)
        leaving = set()
        for job in self.jobs.values():
            if job.joined is None:
                continue
            # At most the second half of a job's useful life counts, so that short worker jobs
            # are replaced one at a time instead of each replacement asking for its own at once.
            left = leave_at.get(job.name)
            if left is None or left - now <= min(lead, (left - job.joined) / 2):
                if job.name not in self.leaving:
                    logger.info("worker job %s: its workers %s; a replacement may be submitted", job.job_id,
                                "have left" if left is None else f"drain in {max(0, left - now):.0f} s")
                leaving.add(job.name)
        return leaving

    def _states(self, asked: list[tuple[str, str]]) -> dict[str, JobStatus]:
        """The worker jobs' states by name: one question to the batch system for all the jobs in its queue."""
        errors: dict[str, Exception] = {}
        by_id = statuses(self.backend, [job_id for _, job_id in asked], errors)
        for job_id, error in errors.items():  # the batch system did not answer: asked again next time
            logger.warning("could not ask for the state of worker job %s: %s", job_id, error)
        return {name: by_id[job_id] for name, job_id in asked if job_id in by_id}

    def _ended_on_its_own(self, job: WorkerJob, status: JobStatus, now: float) -> None:
        words = status.state + (f", exit code {status.exit_code}" if status.exit_code is not None else "")
        words += f": {status.reason}" if status.reason else ""
        at_start = job.joined is None or now - job.joined < self.settings.start_window
        if not at_start:
            self._finish(job, f"ended ({words})")
            return
        when = "before any of its workers joined" if job.joined is None else "right after its workers joined"
        log = (status.log or "").replace("%J", job.job_id).replace("%j", job.job_id) or None
        last_line = _last_line(log and str(Path(log).with_suffix(".err"))) or _last_line(log)
        outcome = f"failed at start ({words}) {when}" + (f"; its output ends: {last_line}" if last_line else "")
        self.failed.append({"job_id": job.job_id, "outcome": outcome, "log": log})
        self._finish(job, outcome)
        logger.warning("worker job %s %s (failure %d of %d allowed)", job.job_id, outcome, len(self.failed),
                       self.settings.failure_limit)
        if len(self.failed) >= self.settings.failure_limit and not self.stopped:
            ids = ", ".join(entry["job_id"] for entry in self.failed)
            self.stopped = (f"{len(self.failed)} worker jobs failed at start (jobs {ids}); the last {outcome}"
                            f"{f' (log {log})' if log else ''}. Fix the worker jobs' setup and start "
                            "a new cluster")
            logger.error("hpcbridge: adding no more worker jobs: %s", self.stopped)

    def _finish(self, job: WorkerJob, outcome: str) -> None:
        self.finished.append({"job_id": job.job_id, "outcome": outcome})
        del self.finished[:-_KEEP_FINISHED]

    def write(self, state: str = "running") -> None:
        """Write the status file (owner-only, replaced in one rename) for ``hpcbridge status``."""
        report = {
            "job_id": self.job_id, "scheduler": self.scheduler, "state": state, "updated": time.time(),
            "minimum": self.settings.minimum, "maximum": self.settings.maximum,
            "max_pending": self.settings.max_pending, "workers": self.workers, "stopped": self.stopped,
            "jobs": [{"job_id": job.job_id, "state": job.state, "reason": job.reason, "joined": job.joined is not None}
                     for job in self.jobs.values()],
            "finished": self.finished, "failed": self.failed,
        }
        self.status_file.parent.mkdir(parents=True, exist_ok=True)
        write_private_file(self.status_file, json.dumps(report, indent=1))


class BatchAdaptive(PatientAdaptive):
    """distributed's Adaptive with a shared batch system's manners (see the module's docstring).

    As :class:`~hpcbridge.job.adaptive.PatientAdaptive`, no worker job is cancelled in its first
    ``min_job_age`` seconds, counted here from its submission (the ledger's record).
    """

    def __init__(self, cluster: Any, *, ledger: JobLedger, processes: int, **kwargs: Any) -> None:
        self.ledger = ledger
        self.processes = processes
        super().__init__(cluster, min_job_age=ledger.settings.min_job_age, **kwargs)

    def job_age(self, name: str) -> float:
        return self.ledger.age(name)

    async def safe_target(self) -> int:
        wanted = await super().safe_target()
        await self.ledger.refresh(self.cluster)
        planned = len(self.cluster.worker_spec)
        settings = self.ledger.settings
        # Jobs about to drain still count in the plan but not for the work: as many replacements
        # as the work wants (up to MAX jobs that stay) are added beside them; they end on their own
        # (or, when no work wants them, are cancelled like any idle job).
        leaving = len(self.ledger.leaving & set(self.cluster.worker_spec))
        if leaving:
            wanted_jobs = math.ceil(wanted / self.processes)
            wanted = (wanted_jobs + min(leaving, wanted_jobs)) * self.processes
        if self.ledger.stopped:
            room: float = 0
        elif settings.max_pending is None:
            room = math.inf
        else:
            room = max(0, settings.max_pending - self.ledger.pending())
        return int(min(wanted, (planned + room) * self.processes))


def cluster_options(spec: JobSpec, settings: AdaptiveSettings, scheduler_file: Path) -> dict[str, Any]:
    """dask-jobqueue's options: the worker jobs of ``spec``, the scheduler in this process."""
    options = worker_job_options(spec)
    options["job_name"] = f"{spec.job_name[:56]}-worker"
    # A failed module load or setup line ends the worker job (and counts as a failure at start)
    # instead of starting workers in the wrong environment.
    options["job_script_prologue"] = ["set -e", *options["job_script_prologue"], *settings.worker_setup]
    options["log_directory"] = str(worker_log_dir(scheduler_file))
    scheduler_options = dict(options["scheduler_options"], port=0)
    # The dashboard lets in its owner only: a browser that brings the token the scheduler file holds.
    os.environ.setdefault("HPCBRIDGE_DASHBOARD_TOKEN", secrets.token_urlsafe(24))
    scheduler_options["preload"] = ["hpcbridge.cluster.dashboard_gate"]
    if settings.idle_timeout:
        scheduler_options["idle_timeout"] = settings.idle_timeout
    if spec.protocol == "tls":
        from distributed.security import Security

        # The scheduler presents the job's certificates (Dask's config, from the variables the job
        # script exported); the worker jobs inherit the same variables, so no key is ever on a
        # command line (and distributed's CLI refuses --interface with --tls-* options).
        scheduler_options.update(protocol="tls://", security=Security())
        options["protocol"] = "tls"
    options["scheduler_options"] = scheduler_options
    options["job_script_prologue"] += worker_job_environment(spec)
    if spec.walltime:
        options["worker_extra_args"] = [*options["worker_extra_args"], "--preload", "hpcbridge.cluster.drain"]
    return options


def worker_job_environment(spec: JobSpec) -> list[str]:
    """Shell lines that give a worker job what the workers of every hpcbridge job know.

    Where finished chunks are saved (runs outlive their cluster), and when this worker job ends,
    so that its workers drain before its walltime (:mod:`hpcbridge.cluster.drain`) rather than die mid-task.
    """
    from hpcbridge.job.render import shell_path

    lines = [f"export HPCBRIDGE_RUN_DIRECTORY={shell_path(spec.runs_directory) if spec.save_runs else chr(34) * 2}"]
    if spec.walltime:
        estimate = f"$(($(date +%s) + {spec.walltime}))"
        end = f"${{SLURM_JOB_END_TIME:-{estimate}}}" if spec.scheduler == "slurm" else estimate
        lines += [f"HPCBRIDGE_JOB_END={end}", "export HPCBRIDGE_JOB_END",
                  f"export HPCBRIDGE_LIFETIME_MARGIN={max(spec.lifetime_margin, 30)}"]
    return lines


async def run(job_id: str, scheduler: str, scheduler_file: Path, spec: JobSpec, settings: AdaptiveSettings) -> int:
    """Run the adaptive cluster until shutdown, idleness or SIGTERM; return the exit status."""
    import dask_jobqueue

    # Where runs are saved, as the scheduler of every hpcbridge job says (clients ask it).
    os.environ.setdefault("HPCBRIDGE_RUN_DIRECTORY", os.path.expanduser(spec.runs_directory) if spec.save_runs else "")
    for key in [key for key in os.environ if key.startswith("SLURM_") and key != "SLURM_CONF"]:
        del os.environ[key]  # sbatch inside this job would take this job's settings for the worker jobs
    cluster_class = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
                     "lsf": dask_jobqueue.LSFCluster, "sge": dask_jobqueue.SGECluster}[scheduler]
    ledger = JobLedger(settings, job_id, scheduler, status_file_for(scheduler_file))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        loop.add_signal_handler(number, stop.set)
    cluster = await cluster_class(asynchronous=True, **cluster_options(spec, settings, scheduler_file))
    reason = "the scheduler closed (a client called shutdown(), or it was idle)"
    try:
        cluster_files.publish(scheduler_file, cluster.scheduler.identity(),
                              {"job_id": job_id, "scheduler": scheduler, "cluster": secrets.token_hex(8),
                               "adaptive": True, "tls": _certificate_paths(),
                               "dashboard": _dashboard(cluster.scheduler, spec.dashboard_host)})
        logger.info("hpcbridge: scheduler at %s; adapting between %d and %d worker job(s)",
                    cluster.scheduler.address, settings.minimum, settings.maximum)
        print(f"hpcbridge: scheduler file ready: {scheduler_file}", flush=True)
        cluster.adapt(Adaptive=BatchAdaptive, minimum_jobs=settings.minimum, maximum_jobs=settings.maximum,
                      interval=settings.interval, wait_count=settings.wait_count, ledger=ledger,
                      processes=spec.ntasks_per_node)
        ledger.write()
        published = PublishedFiles(scheduler_file, _certificate_paths())
        while cluster.scheduler.status.name not in ("closing", "closed", "failed"):
            if stop.is_set():
                reason = "the job was signalled (cancelled, or its walltime is near)"
                break
            published.check()
            await asyncio.sleep(0.5)
    finally:
        logger.info("hpcbridge: ending: %s; cancelling %d worker job(s)", reason, len(cluster.workers))
        scheduler_file.unlink(missing_ok=True)
        _remove_job_certificates(scheduler_file)
        await _close(cluster)
        for job in list(ledger.jobs.values()):
            ledger._finish(job, "cancelled when the cluster ended")
        ledger.jobs.clear()
        ledger.write(state="ended")
    return 0


async def _close(cluster: Any) -> None:
    """Cancel every worker job and stop the scheduler, each bounded in time.

    Not ``cluster.close()``: once a client has shut the scheduler down it waits for an answer
    that never comes. The jobs' cancellation is what matters; the process exits after this.
    """
    jobs = list(cluster.workers.values())
    try:
        await asyncio.wait_for(asyncio.gather(*(job.close() for job in jobs), return_exceptions=True), timeout=60)
    except asyncio.TimeoutError:
        logger.error("hpcbridge: cancelling the worker jobs took over 60 s: check them with squeue/qstat/bjobs")
    if cluster.scheduler.status.name not in ("closing", "closed"):
        try:
            await asyncio.wait_for(cluster.scheduler.close(), timeout=10)
        except Exception as error:
            logger.info("closing the scheduler: %s", error)


class PublishedFiles:
    """The scheduler file and certificates this job published, which must stay while it runs.

    A scratch purge that removes them leaves a cluster that no new client can attach to and that
    new workers cannot join; :meth:`check` says so once in the job's output (where ``hpcbridge
    status`` and ``connect`` read it), after :attr:`GRACE` seconds gone (a client's shutdown
    removes the file too, as the scheduler stops). As the job scripts' ``check_published_files``.
    """

    GRACE = 10.0

    def __init__(self, scheduler_file: Path, certificates: dict[str, str] | None) -> None:
        self.paths = [Path(scheduler_file), *(Path(path) for path in (certificates or {}).values())]
        self.scheduler_file = Path(scheduler_file)
        self.gone_since: float | None = None
        self.said = False

    def check(self, now: float | None = None) -> str | None:
        """Look once; return the warning when it is said now."""
        now = time.monotonic() if now is None else now
        missing = next((path for path in self.paths if not path.exists()), None)
        if missing is None:
            self.gone_since, self.said = None, False
            return None
        self.gone_since = self.gone_since if self.gone_since is not None else now
        if self.said or now - self.gone_since < self.GRACE:
            return None
        self.said = True
        what = f"the scheduler file {missing}" if missing == self.scheduler_file else f"the cluster's certificate {missing}"
        warning = (f"hpcbridge: warning: {what} is gone while the job runs (its folder purged or deleted?): no new "
                   "client can attach, and a worker job that starts cannot join; the cluster goes on with the clients "
                   "and workers it has (cancel the job and start it again with --scheduler-file in a folder that "
                   "is not purged)")
        print(warning, file=sys.stderr, flush=True)
        return warning


def _dashboard(scheduler: Any, host: str) -> dict[str, Any] | None:
    """Where the scheduler's dashboard listens, as job scripts record it: this node, the host, the port taken."""
    port = scheduler.services.get("dashboard") if hasattr(scheduler, "services") else None
    port = getattr(port, "port", port)
    return {"node": socket.gethostname(), "host": host, "port": int(port),
            "token": os.environ.get("HPCBRIDGE_DASHBOARD_TOKEN")} if port else None


def _certificate_paths() -> dict[str, str] | None:
    """The client certificate this job's variables name (the job made them, or was given them)."""
    files = {key: os.environ.get(f"DASK_DISTRIBUTED__COMM__TLS__{variable}")
             for key, variable in (("ca_file", "CA_FILE"), ("cert", "CLIENT__CERT"), ("key", "CLIENT__KEY"))}
    return files if all(files.values()) else None  # type: ignore[return-value]


def _remove_job_certificates(scheduler_file: Path) -> None:
    """Remove the certificates this job made for itself (``scheduler.tls/`` beside the file), never given ones."""
    folder = scheduler_file.with_name(scheduler_file.name.removesuffix(".json") + ".tls")
    ca_file = os.environ.get("DASK_DISTRIBUTED__COMM__TLS__CA_FILE", "")
    if ca_file and Path(ca_file).parent == folder and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def _last_line(log: str | None) -> str | None:
    if not log:
        return None
    try:
        lines = [line.strip() for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    return lines[-1][:300] if lines else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcbridge.job.adaptive_scheduler", description=__doc__.splitlines()[0])
    parser.add_argument("--job-id", required=True, help="this batch job's id")
    parser.add_argument("--scheduler", required=True, choices=("slurm", "pbs", "lsf", "sge"))
    parser.add_argument("--scheduler-file", required=True, type=Path)
    parser.add_argument("--worker-spec", required=True, help="the worker jobs' JobSpec as JSON")
    parser.add_argument("--settings", required=True, help="AdaptiveSettings as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("distributed.deploy.adaptive").setLevel(logging.INFO)
    spec = JobSpec(**json.loads(args.worker_spec))
    settings = AdaptiveSettings(**json.loads(args.settings))

    async def run_then_exit() -> None:
        status = 1
        try:
            status = await run(args.job_id, args.scheduler, args.scheduler_file.expanduser(), spec, settings)
        except Exception:
            logger.exception("hpcbridge: the adaptive cluster failed")
        finally:
            # Exit at once: the tasks and threads of a closed cluster can keep an interpreter
            # (and so this batch job) alive for minutes, and the job has nothing left to do.
            logging.shutdown()
            sys.stdout.flush()
            os._exit(status)

    asyncio.run(run_then_exit())
    return 1


if __name__ == "__main__":
    sys.exit(main())
