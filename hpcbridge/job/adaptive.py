"""Adaptive mode: the same job spec drives dask-jobqueue, which adds and removes batch jobs.

In scheduler-file mode one batch job holds the whole cluster. In adaptive mode dask-jobqueue
submits one batch job per ``ntasks_per_node`` workers as the work needs them, cancelling them
when they idle. hpcbridge only translates the spec; the scaling is dask-jobqueue's own
(``SLURMCluster``, ``PBSCluster``, ``LSFCluster``). Two ways to run it:

- :func:`start` (``hpcbridge up --adapt MIN:MAX``) submits one small batch job that runs the
  scheduler and the adaptive logic (:mod:`hpcbridge.job.adaptive_scheduler`) and writes the scheduler
  file like every hpcbridge cluster, so clients come and go while it adapts;
- :func:`jobqueue_cluster` keeps the scheduler in the caller's own process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distributed.deploy.adaptive import Adaptive

from hpcbridge.job import requests, units
from hpcbridge.job.render import directive_lines, shell_path, shell_word
from hpcbridge.job.spec import JOB_ID_PLACEHOLDER, JobSpec, SpecError, default_scheduler_file
from hpcbridge.private_files import make_private_dir, state_home, write_private_file


def jobqueue_options(spec: JobSpec) -> dict[str, Any]:
    """dask-jobqueue keyword arguments for one batch job of ``spec`` (one node, its tasks as workers)."""
    options = worker_job_options(spec)
    if spec.protocol != "tcp":
        raise SpecError("protocol", spec.protocol, "tcp in adaptive mode with the scheduler in your process "
                        "(hpcbridge up --adapt also runs tls)")
    return options


def worker_job_options(spec: JobSpec) -> dict[str, Any]:
    """dask-jobqueue keyword arguments for one worker job of ``spec``, whatever its protocol."""
    if spec.nodes != 1:
        raise SpecError("nodes", spec.nodes, "1 in adaptive mode (each batch job is one node; scale adds jobs)")
    if spec.mem is None and spec.mem_per_cpu is None:
        raise SpecError("mem", None, "a memory size ({mem} or {mem_per_cpu}): dask-jobqueue needs each job's memory")
    if spec.container:
        raise SpecError("container", spec.container, "no {container} in adaptive mode yet (dask-jobqueue writes the "
                        "worker jobs' command): give {python} a command line that runs the container, or use "
                        "hpcbridge submit")
    cores = spec.ntasks_per_node * spec.cpus_per_task
    job_memory = spec.mem or spec.mem_per_cpu * cores
    prologue = [f"module load {' '.join(spec.modules)}"] if spec.modules else []
    # dask-jobqueue writes these into the job's shell command as they are: quoted words, ~/ live;
    # the workers' scratch on the node's own disk unless the spec names a folder.
    local_directory = (shell_path(spec.local_directory) if spec.local_directory
                       else '"${TMPDIR:-${SLURM_TMPDIR:-/tmp}}"')
    options: dict[str, Any] = {
        "cores": cores,
        "processes": spec.ntasks_per_node,
        "memory": f"{job_memory}MiB",
        "python": " ".join(shell_word(word) for word in spec.python),
        "local_directory": local_directory,
        "job_extra_directives": directive_lines(spec),
        "job_name": spec.job_name,
        "interface": spec.interface,
        "scheduler_options": {"interface": spec.scheduler_interface, "dashboard_address": spec.dashboard_address},
        "worker_extra_args": ["--no-dashboard", "--dashboard-address", spec.worker_dashboard_address,
                              *(["--resources", f"GPU={spec.gpus_per_worker}"] if spec.gpus_per_worker else []),
                              *(["--worker-class", spec.worker_class] if spec.worker_class else [])],
        "job_script_prologue": prologue + list(spec.setup),
        "queue": spec.queue,
    }
    if spec.walltime:
        options["walltime"] = (units.lsf_walltime(spec.walltime) if spec.scheduler == "lsf"
                               else units.clock_walltime(spec.walltime))
    if spec.scheduler == "slurm":
        options["account"] = spec.account
    elif spec.scheduler == "pbs":
        options["account"] = spec.account
        gpus = requests.gpus_per_node(spec.gpus_per_task, spec.gpus_per_node, spec.ntasks_per_node)
        features = requests.features(spec.constraint) if spec.constraint else []
        if spec.pbs_flavor == "torque":
            options["resource_spec"] = "".join([f"nodes=1:ppn={cores}", f":gpus={gpus}" if gpus else "",
                                                *(f":{name}" for name in features)])
        else:
            options["resource_spec"] = "".join([f"select=1:ncpus={cores}:mem={job_memory}mb",
                                                f":ngpus={gpus}" if gpus else "",
                                                *(f":{name}=True" for name in features)])
            if spec.exclusive:
                options["job_extra_directives"].append("-l place=excl")
    elif spec.scheduler == "lsf":
        options.update(project=spec.account, ncpus=cores, mem=job_memory * 2**20, lsf_units="MB", use_stdin=True)
    elif spec.scheduler == "sge":
        # dask-jobqueue's SGECluster asks for no slots or memory itself: the job's CPUs come from the
        # parallel environment and memory per slot as mem_free, as hpcbridge's own Grid Engine jobs ask.
        slot_memory = -(-job_memory // cores)
        options.update(project=spec.account, resource_spec=f"mem_free={units.sge_memory(slot_memory)}")
        options["job_extra_directives"] = ["-S /bin/bash", *([f"-pe {spec.pe} {cores}"] if spec.pe else []),
                                           *options["job_extra_directives"]]
    else:
        raise SpecError("scheduler", spec.scheduler, "slurm, pbs, lsf or sge in adaptive mode")
    return options


def jobqueue_cluster(spec: JobSpec, **overrides: Any):
    """A dask-jobqueue cluster for ``spec``; call ``.adapt(...)`` or ``.scale(jobs=N)`` on it.

    ``overrides`` go to dask-jobqueue unchanged (``log_directory``, ``worker_extra_args``, ...).
    Its ``adapt`` uses :class:`PatientAdaptive` unless given another ``Adaptive=``.
    """
    import dask_jobqueue

    cluster_class = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
                     "lsf": dask_jobqueue.LSFCluster, "sge": dask_jobqueue.SGECluster}
    options = jobqueue_options(spec)
    return _patient(cluster_class[spec.scheduler])(**{**options, **overrides})


def _patient(cluster_class: type) -> type:
    """``cluster_class`` whose ``adapt`` defaults to :class:`PatientAdaptive`."""

    class Cluster(cluster_class):  # type: ignore[misc,valid-type]
        def adapt(self, *args: Any, Adaptive: type | None = None, **kwargs: Any) -> Any:
            return super().adapt(*args, Adaptive=Adaptive or PatientAdaptive, **kwargs)

    Cluster.__name__ = Cluster.__qualname__ = cluster_class.__name__
    return Cluster


class PatientAdaptive(Adaptive):
    """distributed's Adaptive that cancels no worker job in its first ``min_job_age`` seconds.

    distributed cancels a job whose workers have not joined yet as soon as its target drops
    below the plan, without waiting ``wait_count`` decisions. A job takes seconds to start, and
    the target, estimated from the first tasks, swings in that time: on a loaded machine
    dask-jobqueue submitted and cancelled 90 jobs for an 8-task map and killed workers that had
    just begun a task (KilledWorker). Here a job is cancelled only once it is ``min_job_age``
    old (default 60 s), as ``hpcbridge up --adapt`` does.
    """

    def __init__(self, cluster: Any, *, min_job_age: float | str = 60.0, **kwargs: Any) -> None:
        self.min_job_age = parse_duration("min_job_age", min_job_age)
        self._planned_at: dict[str, float] = {}
        super().__init__(cluster, **kwargs)

    def job_age(self, name: str) -> float:
        """Seconds since the worker job ``name`` was first seen in the plan."""
        return time.monotonic() - self._planned_at.get(name, time.monotonic())

    async def recommendations(self, target: int) -> dict:
        now = time.monotonic()
        names = self.cluster.worker_spec
        self._planned_at = {name: self._planned_at.get(name, now) for name in names}
        advice = await super().recommendations(target)
        if advice["status"] == "down":
            advice["workers"] = [w for w in advice["workers"]
                                 if self.job_age(job_name_of(str(w), names)) >= self.min_job_age]
            if not advice["workers"]:
                return {"status": "same"}
        return advice


def job_name_of(worker: str, worker_spec: dict) -> str:
    """The job a worker belongs to: dask-jobqueue names a job's workers NAME-0, NAME-1 ... when it runs several."""
    if worker in worker_spec:
        return worker
    base, _, suffix = worker.rpartition("-")
    return base if base in worker_spec and suffix.isdigit() else worker


# --------------------------------------------------------------------------------------------
# The adaptive cluster inside a batch job (hpcbridge up --adapt MIN:MAX)
# --------------------------------------------------------------------------------------------

ADAPT_HELP = "MIN:MAX, two whole numbers of worker jobs with 0 <= MIN <= MAX and MAX >= 1 (e.g. 0:10)"
_DURATION_HELP = "a duration such as 30s, 5m, 1h or a number of seconds"


@dataclass(frozen=True)
class AdaptiveSettings:
    """How the adaptive cluster grows and shrinks; every duration is in seconds.

    ``minimum``/``maximum`` count worker jobs (each runs ``ntasks_per_node`` workers). The
    defaults are meant for a shared batch system, where a job may pend for minutes: a decision
    is taken every ``interval`` seconds, a worker stays ``wait_count`` decisions idle before its
    job is cancelled, and no worker job is cancelled in its first ``min_job_age`` seconds (it
    may have only just left the queue). At most ``max_pending`` worker jobs wait in the queue at
    once (None: no cap). After ``failure_limit`` worker jobs fail at start the cluster stops
    adding jobs instead of resubmitting them in a loop (a job counts when it ends before its
    workers joined or within ``start_window`` seconds after). With no task for ``idle_timeout``
    seconds the cluster ends, cancelling its worker jobs. A worker job whose workers drain before its walltime gets a replacement
    submitted ``replace_lead`` seconds before they start to (or twice the slowest start seen so
    far, if longer), when the work still wants it. ``scheduler_walltime`` and
    ``scheduler_mem`` are the scheduler job's own (default: the worker jobs' walltime, 2 GiB); ``worker_setup`` lines run
    in the worker jobs only, after the spec's modules and setup.
    """

    minimum: int = 0
    maximum: int = 1
    max_pending: int | None = None
    idle_timeout: int = 1800
    interval: float = 10.0
    wait_count: int = 6
    min_job_age: float = 300.0
    failure_limit: int = 3
    start_window: float = 60.0
    replace_lead: float = 300.0
    scheduler_walltime: int | None = None
    scheduler_mem: int = 2048
    worker_setup: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("minimum", "maximum", "wait_count", "failure_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise SpecError(name, value, "a whole number, 0 or more")
        if self.maximum < 1 or self.minimum > self.maximum:
            raise SpecError("adapt", f"{self.minimum}:{self.maximum}", ADAPT_HELP)
        if self.max_pending is not None and (isinstance(self.max_pending, bool) or not isinstance(self.max_pending, int)
                                             or self.max_pending < 1):
            raise SpecError("max_pending", self.max_pending, "a whole number, 1 or more")
        if self.failure_limit < 1:
            raise SpecError("failure_limit", self.failure_limit, "a whole number, 1 or more")
        for name in ("idle_timeout", "interval", "min_job_age", "start_window", "replace_lead"):
            label = "adapt_interval" if name == "interval" else name
            object.__setattr__(self, name, parse_duration(label, getattr(self, name)))
        if self.interval <= 0:
            raise SpecError("adapt_interval", self.interval, "a duration above 0 s")
        for name, spec_field in (("scheduler_walltime", "walltime"), ("scheduler_mem", "mem"),
                                 ("worker_setup", "setup")):
            try:
                checked = getattr(JobSpec(**{spec_field: getattr(self, name)}), spec_field)
            except SpecError as error:
                raise SpecError(name, error.value, error.allowed) from None
            object.__setattr__(self, name, checked)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (for the job script and ``--json``)."""
        return dataclasses.asdict(self)


def parse_duration(name: str, value: object) -> float:
    """Seconds from ``30s``, ``5m``, ``1h`` or a plain number of seconds.

    >>> parse_duration("idle_timeout", "30m"), parse_duration("interval", 2), parse_duration("interval", "500ms")
    (1800.0, 2.0, 0.5)
    """
    from dask.utils import parse_timedelta

    try:
        seconds = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else float(parse_timedelta(str(value).strip(), default="seconds"))
    except (TypeError, ValueError, KeyError):
        raise SpecError(name, value, _DURATION_HELP) from None
    if not seconds >= 0 or seconds == float("inf"):
        raise SpecError(name, value, _DURATION_HELP)
    return seconds


def parse_adapt_range(text: str) -> tuple[int, int]:
    """``"MIN:MAX"`` as two numbers of worker jobs.

    >>> parse_adapt_range("0:10"), parse_adapt_range(" 2 : 4 ")
    ((0, 10), (2, 4))
    """
    low, colon, high = str(text).partition(":")
    try:
        minimum, maximum = int(low.strip()), int(high.strip())
    except ValueError:
        raise SpecError("adapt", text, ADAPT_HELP) from None
    if not colon or minimum < 0 or maximum < 1 or minimum > maximum:
        raise SpecError("adapt", text, ADAPT_HELP)
    return minimum, maximum


def scheduler_job_spec(spec: JobSpec, settings: AdaptiveSettings) -> JobSpec:
    """The spec of the one small job that runs the scheduler and the adaptive logic.

    It shares everything with the worker jobs (account, queue, modules, setup, Python,
    interfaces, scheduler file) except its size: one task, one CPU, ``settings.scheduler_mem``.
    """
    return dataclasses.replace(spec, nodes=1, ntasks_per_node=1, cpus_per_task=1, mem=settings.scheduler_mem,
                               mem_per_cpu=None, walltime=settings.scheduler_walltime or spec.walltime,
                               gpus_per_task=None, gpus_per_node=None, exclusive=False)


def check_adaptive_spec(spec: JobSpec) -> None:
    """Refuse what the adaptive cluster cannot run, before anything is rendered or submitted."""
    if spec.mode != "scheduler-file":
        raise SpecError("mode", spec.mode, "scheduler-file with --adapt (the adaptive cluster has its own job)")
    if spec.scheduler not in ("slurm", "pbs", "lsf", "sge"):
        raise SpecError("scheduler", spec.scheduler, "slurm, pbs, lsf or sge with --adapt (worker jobs need a batch "
                        "system)")
    if spec.protocol == "ucx":
        raise SpecError("protocol", spec.protocol, "tls or tcp with --adapt")
    worker_job_options(spec)


def render_adaptive_script(spec: JobSpec, settings: AdaptiveSettings) -> str:
    """The scheduler job's script: ``templates/<scheduler>/adaptive.sh.j2``.

    The template gets the scheduler job's spec as ``spec`` and the worker jobs' spec and the
    settings as JSON text (``worker_spec``, ``settings``) for ``python -m hpcbridge.job.adaptive_scheduler``.
    """
    from hpcbridge.job.render import render_named

    check_adaptive_spec(spec)
    return render_named(f"{spec.scheduler}/adaptive.sh.j2", scheduler_job_spec(spec, settings),
                        worker_spec=json.dumps(dataclasses.asdict(spec), sort_keys=True),
                        settings=json.dumps(settings.as_dict(), sort_keys=True), adapt=settings)


def start(spec: JobSpec, minimum: int = 0, maximum: int = 1, **settings: Any):
    """Submit the adaptive cluster's scheduler job; return it as a :class:`~hpcbridge.job.submit.SubmittedJob`.

    The job runs the Dask scheduler and dask-jobqueue's adaptive logic, writes the scheduler
    file like every hpcbridge cluster (``hpcbridge.connect(job.scheduler_file)``), and submits
    between ``minimum`` and ``maximum`` worker jobs of ``spec`` as the work needs them.
    ``settings`` are the other fields of :class:`AdaptiveSettings`. It ends when a client calls
    ``shutdown()``, when it has been idle for ``idle_timeout``, or when it is cancelled; worker
    jobs are cancelled with it.
    """
    from hpcbridge import scheduler_file
    from hpcbridge.backends import get_backend
    from hpcbridge.backends.job import SubmittedJob, file_owner_running, note

    adapt = AdaptiveSettings(minimum=minimum, maximum=maximum, **settings)
    script = render_adaptive_script(spec, adapt)
    if JOB_ID_PLACEHOLDER not in spec.scheduler_file:
        scheduler_file.claim(spec.scheduler_file, file_owner_running, default_scheduler_file())
    job_id = get_backend(spec.scheduler).submit(script)
    job = SubmittedJob(job_id=job_id, scheduler=spec.scheduler, scheduler_file=spec.scheduler_file_for(job_id))
    _write_record(job)
    job.record()  # hpcbridge list, connect and cancel find it by its id like any cluster
    note(job, submitted=time.time(), name=spec.job_name, mode="adaptive", walltime=adapt.scheduler_walltime or spec.walltime)
    return job


# --- The status file: what the scheduler job says about its worker jobs ---------------------

def status_file_for(scheduler_file: str | os.PathLike[str]) -> Path:
    """Where the adaptive job reports its worker jobs: ``scheduler.json`` → ``scheduler.adaptive.json``.

    >>> str(status_file_for("/s/jobs/42/scheduler.json"))
    '/s/jobs/42/scheduler.adaptive.json'
    """
    path = Path(scheduler_file).expanduser()
    return path.with_name(path.name.removesuffix(".json") + ".adaptive.json")


def worker_log_dir(scheduler_file: str | os.PathLike[str]) -> Path:
    """Where the worker jobs' output goes: ``scheduler.json`` → ``scheduler.workers/`` beside it."""
    path = Path(scheduler_file).expanduser()
    return path.with_name(path.name.removesuffix(".json") + ".workers")


def _write_record(job) -> None:
    folder = make_private_dir(state_home("adaptive"))
    write_private_file(folder / f"{job.scheduler}-{job.job_id}.json", json.dumps(job.as_dict()))


def read_status(job_id: str, scheduler: str) -> dict[str, Any] | None:
    """The adaptive job's last report on its worker jobs, or None when ``job_id`` is not an adaptive cluster."""
    candidates = []
    try:
        record = json.loads((state_home("adaptive") / f"{scheduler}-{job_id}.json").read_text())
        candidates.append(status_file_for(record["scheduler_file"]))
    except (OSError, ValueError, KeyError):
        pass
    candidates.append(status_file_for(default_scheduler_file().replace(JOB_ID_PLACEHOLDER, str(job_id))))
    for path in candidates:
        try:
            report = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(report, dict) and str(report.get("job_id")) == str(job_id):
            return report
    return None


def describe_status(report: dict[str, Any], live: bool = True) -> list[str]:
    """Lines for ``hpcbridge status`` on an adaptive cluster's scheduler job: its worker jobs by state.

    With ``live``, the state of every worker job not yet finished is asked of the batch system
    now (the report may be an interval old); pending jobs come with the reason in words.
    """
    from hpcbridge.backends import JobNotFound, get_backend

    backend = get_backend(report["scheduler"])
    lines = [f"  adaptive: {report['minimum']} to {report['maximum']} worker jobs"
             + (f", at most {report['max_pending']} pending" if report.get("max_pending") else "")
             + f"; {report.get('workers', 0)} worker(s) connected"
             + f" (reported {time.strftime('%H:%M:%S', time.localtime(report.get('updated', 0)))})"]
    if report.get("stopped"):
        lines.append(f"  adding no more worker jobs: {report['stopped']}")
    groups: dict[str, list[str]] = {"running": [], "pending": [], "finished": []}
    for entry in report.get("jobs", []):
        state, reason = entry.get("state"), entry.get("reason")
        if live:
            try:
                status = backend.status(entry["job_id"])
                state, reason = status.state, status.reason
            except (JobNotFound, OSError, RuntimeError, ValueError):
                pass
        group = "pending" if state == "PENDING" else "running" if state in ("RUNNING", "COMPLETING") else "finished"
        groups[group].append(f"{entry['job_id']}" + (f" ({reason})" if group == "pending" and reason else ""))
    for entry in report.get("finished", []):
        groups["finished"].append(f"{entry['job_id']} ({entry['outcome']})")
    for group, entries in groups.items():
        lines.append(f"  worker jobs {group}: " + (", ".join(entries) if entries else "none"))
    return lines
