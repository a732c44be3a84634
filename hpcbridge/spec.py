"""The job spec: one typed, validated description of a Dask cluster on a batch system.

Every value a user can set is a field of :class:`JobSpec`, and every rule about what a field
may hold lives in this module. A spec that exists is valid: the constructor parses text the way
users type it (``"4G"``, ``"01:00:00"``, ``"2"``), checks it, and raises :class:`SpecError`
naming the field, the value and what is allowed. The renderer can then trust every value.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hpcbridge.units import MEMORY_HELP, WALLTIME_HELP, parse_memory_mib, parse_walltime_seconds

SCHEDULERS = ("slurm", "pbs", "lsf", "local")
MODES = ("scheduler-file", "mpi", "array")
PROTOCOLS = ("tcp", "tls", "ucx")
PBS_FLAVORS = ("pbspro", "torque")
JOB_ID_PLACEHOLDER = "{job_id}"
DEFAULT_SCHEDULER_FILE = "~/.hpcbridge/jobs/{job_id}/scheduler.json"

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,63}(,[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,63})*$")
_INTERFACE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}$")
_MODULE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+/@:-]{0,127}$")
_PLACEHOLDER = re.compile(r"\{[^}]*\}")
_ARRAY = re.compile(r"^\d{1,7}-\d{1,7}(:[1-9]\d{0,6})?$")


class SpecError(ValueError):
    """A spec value that is not allowed: names the field, the value and what is allowed."""

    def __init__(self, field_name: str, value: object, allowed: str) -> None:
        self.field = field_name
        self.value = value
        self.allowed = allowed
        super().__init__(f"{field_name}: {value!r} is not allowed; expected {allowed}")


@dataclass(frozen=True)
class JobSpec:
    """One batch job: a Dask cluster (scheduler-file or mpi mode) or an array of independent chunks.

    The batch step runs the Dask scheduler and writes its address to ``scheduler_file``; each of
    the ``nodes * ntasks_per_node`` tasks runs one Dask worker with ``cpus_per_task`` threads.
    Memory is either per CPU (``mem_per_cpu``) or per node (``mem``), in MiB once parsed; with
    neither, workers take their share of whatever the scheduler allocated.

    ``scheduler_file`` may contain ``{job_id}`` (replaced by the batch system's job id when the
    job runs) and may start with ``~/`` (the home directory on the compute node). ``setup``
    lines are shell commands run before Dask starts (``source ~/venv/bin/activate``): they are
    the only values that reach the script unquoted, by design.

    In ``mpi`` mode the job is one MPI program (dask-mpi): rank 0 runs the scheduler, rank 1 runs
    ``client_script`` when one is given, and every other rank is a worker.

    In ``array`` mode there is no Dask cluster: the workload is independent chunks, and each
    element of the job array (``array`` such as ``1-100``, at most ``array_throttle`` at once)
    runs ``client_script`` on one node with ``HPCBRIDGE_ARRAY_INDEX`` set to its index.

    ``interface`` is the workers' network interface; ``scheduler_interface`` (default: the same)
    is the one the scheduler listens on, which clients must be able to reach. With protocol
    ``tls`` the three ``tls_*`` files are required: the CA and a certificate and key that the
    scheduler, workers and clients share. Workers retire ``lifetime_margin`` before the walltime
    so they close cleanly instead of being killed. With ``requeue`` (Slurm, scheduler-file mode)
    the job puts itself back in the queue shortly before its walltime or when preempted, and
    writes a new scheduler file at the same path when it starts again.
    """

    scheduler: str = "local"
    mode: str = "scheduler-file"
    nodes: int = 1
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    mem_per_cpu: int | None = None
    mem: int | None = None
    walltime: int | None = None
    account: str | None = None
    queue: str | None = None
    job_name: str = "hpcbridge"
    interface: str | None = None
    scheduler_interface: str | None = None
    protocol: str = "tcp"
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    scheduler_file: str = DEFAULT_SCHEDULER_FILE
    modules: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    python: str = dataclasses.field(default_factory=lambda: default_python())
    client_script: str | None = None
    client_args: tuple[str, ...] = ()
    array: str | None = None
    array_throttle: int | None = None
    pbs_flavor: str = "pbspro"
    lifetime_margin: int = 300
    scheduler_timeout: int = 120
    run_directory: str | None = None
    save_runs: bool = True
    requeue: bool = False

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            object.__setattr__(self, name, check(name, getattr(self, name)))
        if self.scheduler == "local" and self.interface is None:
            object.__setattr__(self, "interface", "lo")  # one machine: keep Dask off the network
        if self.scheduler_interface is None:
            object.__setattr__(self, "scheduler_interface", self.interface)
        self._check_combinations()

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> JobSpec:
        """Build a spec from a mapping (CLI options, a site profile), ignoring ``None`` values.

        An unknown key is an error that lists every known one, so a typo never passes silently.
        """
        known = set(spec_fields())
        unknown = sorted(set(values) - known)
        if unknown:
            raise SpecError(unknown[0], values[unknown[0]], "one of the fields " + ", ".join(sorted(known)))
        return cls(**{key: value for key, value in values.items() if value is not None})

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None = None) -> JobSpec:
        """Build a spec from ``values`` with the site profile in Dask's config filling the rest.

        A centre writes its settings once, in a YAML file Dask reads (``~/.config/dask/`` or
        ``$DASK_CONFIG``, e.g. ``hpcbridge: {scheduler: slurm, slurm: {account: proj42,
        interface: ib0}}``) or as environment variables (``DASK_HPCBRIDGE__SLURM__ACCOUNT=proj42``).
        Values given here win over ``hpcbridge.<scheduler>.<field>``, which wins over the
        defaults; ``hpcbridge.scheduler`` picks the scheduler when none is given.
        """
        import dask.config

        given = {key: value for key, value in (values or {}).items() if value not in (None, ())}
        scheduler = given.get("scheduler") or dask.config.get("hpcbridge.scheduler", None) or "local"
        profile = dask.config.get(f"hpcbridge.{str(scheduler).lower()}", None) or {}
        if not isinstance(profile, Mapping):
            raise SpecError(f"hpcbridge.{scheduler}", profile, "a mapping of spec fields in Dask's config")
        merged = {str(key).replace("-", "_"): value for key, value in profile.items()}
        merged.update(given, scheduler=scheduler)
        return cls.from_dict(merged)

    @property
    def tasks(self) -> int:
        """How many tasks (MPI ranks in ``mpi`` mode) the job runs."""
        return self.nodes * self.ntasks_per_node

    @property
    def workers(self) -> int:
        """How many Dask workers the job starts: one per task, less the scheduler and client ranks in mpi mode."""
        if self.mode == "mpi":
            return self.tasks - self.mpi_reserved_ranks
        return self.tasks

    @property
    def mpi_reserved_ranks(self) -> int:
        """MPI ranks that are not workers: the scheduler, and the client when there is a script."""
        return 2 if self.client_script else 1

    @property
    def array_indices(self) -> range:
        """The indices of the job array's elements (empty outside array mode)."""
        if not self.array:
            return range(0)
        first, _, rest = self.array.partition("-")
        last, _, step = rest.partition(":")
        return range(int(first), int(last) + 1, int(step or 1))

    @property
    def worker_lifetime(self) -> int | None:
        """Seconds a worker lives before retiring, when a walltime is known and long enough."""
        if self.walltime is None or self.walltime - self.lifetime_margin < 60:
            return None
        return self.walltime - self.lifetime_margin

    @property
    def runs_directory(self) -> str:
        """Where runs are saved: ``run_directory``, or ``runs/`` beside the scheduler files of all jobs.

        The default leaves out the per-job part of the scheduler file's path, so that a later job
        finds (and resumes) the runs of an earlier one:

        >>> JobSpec(scheduler_file="/scratch/me/{job_id}/scheduler.json").runs_directory
        '/scratch/me/runs'
        """
        if self.run_directory:
            return self.run_directory
        folder = os.path.dirname(self.scheduler_file)
        while JOB_ID_PLACEHOLDER in folder:
            folder = os.path.dirname(folder)
        return os.path.join(folder, "runs")

    def scheduler_file_for(self, job_id: str) -> str:
        """The scheduler file's path for a submitted job, as the client on this machine sees it."""
        return os.path.expanduser(self.scheduler_file.replace(JOB_ID_PLACEHOLDER, str(job_id)))

    def _check_combinations(self) -> None:
        if self.mem is not None and self.mem_per_cpu is not None:
            raise SpecError("mem", f"{self.mem}M", "either mem (per node) or mem_per_cpu, not both")
        if self.scheduler == "local" and self.nodes != 1:
            raise SpecError("nodes", self.nodes, "1 with the local scheduler (it runs on this machine)")
        if self.scheduler == "local" and self.mode == "mpi":
            raise SpecError("mode", self.mode, "scheduler-file with the local scheduler")
        if self.mode == "mpi" and self.workers < 1:
            needed = self.mpi_reserved_ranks + 1
            raise SpecError("ntasks_per_node", self.ntasks_per_node,
                            f"at least {needed} tasks in all in mpi mode (scheduler, "
                            f"{'client, ' if self.client_script else ''}one worker); nodes x ntasks_per_node is {self.tasks}")
        if (self.client_script or self.client_args) and self.mode == "scheduler-file":
            raise SpecError("client_script", self.client_script, "a client script only in mpi or array mode")
        if self.mode == "array":
            for name in ("array", "client_script"):
                if getattr(self, name) is None:
                    raise SpecError(name, None, "a value: array mode needs array (e.g. 1-100) and client_script")
            if self.nodes != 1:
                raise SpecError("nodes", self.nodes, "1 in array mode (each element runs on one node)")
            if not self.array_indices:
                raise SpecError("array", self.array, "a range FIRST-LAST[:STEP] with LAST >= FIRST and STEP >= 1")
        elif self.array is not None or self.array_throttle is not None:
            raise SpecError("array", self.array, "no job array unless mode is array")
        if self.requeue and (self.scheduler != "slurm" or self.mode != "scheduler-file"):
            raise SpecError("requeue", self.requeue, "false unless scheduler is slurm and mode is scheduler-file "
                            "(the job requeues itself with scontrol requeue)")
        tls_files = {"tls_ca_file": self.tls_ca_file, "tls_cert": self.tls_cert, "tls_key": self.tls_key}
        if self.protocol == "tls":
            for name, value in tls_files.items():
                if value is None:
                    raise SpecError(name, value, "a file path: protocol tls needs tls_ca_file, tls_cert and tls_key")
        else:
            for name, value in tls_files.items():
                if value is not None:
                    raise SpecError(name, value, "no TLS files unless protocol is tls")


def _choice(options: tuple[str, ...]):
    def check(name: str, value: object) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise SpecError(name, value, "one of " + ", ".join(options))
        return text

    return check


def _count(low: int, high: int):
    def check(name: str, value: object) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise SpecError(name, value, f"a whole number from {low} to {high}") from None
        if not low <= number <= high:
            raise SpecError(name, value, f"a whole number from {low} to {high}")
        return number

    return check


def _optional_count(low: int, high: int):
    whole = _count(low, high)

    def check(name: str, value: object) -> int | None:
        return None if value is None else whole(name, value)

    return check


def _memory(name: str, value: object) -> int | None:
    if value is None:
        return None
    try:
        return value if isinstance(value, int) and value > 0 else parse_memory_mib(str(value))
    except ValueError:
        raise SpecError(name, value, MEMORY_HELP) from None


def _walltime(name: str, value: object) -> int | None:
    if value is None:
        return None
    try:
        return value if isinstance(value, int) and value >= 60 else parse_walltime_seconds(str(value))
    except ValueError:
        raise SpecError(name, value, WALLTIME_HELP) from None


def _pattern(regex: re.Pattern[str], allowed: str, optional: bool = True):
    def check(name: str, value: object) -> str | None:
        if value is None and optional:
            return None
        text = str(value)
        if not regex.match(text):
            raise SpecError(name, value, allowed)
        return text

    return check


def _one_line(name: str, value: object) -> str:
    text = str(value)
    if not text.strip() or "\n" in text or "\r" in text or "\0" in text:
        raise SpecError(name, value, "one non-empty line of text")
    return text


def _lines(item_check):
    def check(name: str, value: object) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else list(value or ())
        return tuple(item_check(name, item) for item in items)

    return check


def _scheduler_file(name: str, value: object) -> str:
    text = _one_line(name, value).strip()
    stray = [p for p in _PLACEHOLDER.findall(text) if p != JOB_ID_PLACEHOLDER]
    if stray or text.endswith("/"):
        raise SpecError(name, value, "a file path, optionally containing {job_id} and starting with ~/")
    return _optional_path(name, text)


def _optional_path(name: str, value: object) -> str | None:
    """A file path as the compute nodes see it: absolute (relative ones resolve here) or ~/..."""
    if value is None:
        return None
    text = _one_line(name, value).strip()
    if text.startswith("~") and not text.startswith("~/"):
        raise SpecError(name, value, "a path starting with ~/ (your own home), not another user's")
    return text if text.startswith("~/") or os.path.isabs(text) else os.path.abspath(text)


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SpecError(name, value, "true or false (also yes/no, on/off, 1/0)")


def _duration_seconds(name: str, value: object) -> int:
    if isinstance(value, int) and value >= 0:
        return value
    try:
        return parse_walltime_seconds(str(value))
    except ValueError:
        raise SpecError(name, value, WALLTIME_HELP) from None


_INTERFACE_HELP = "a network interface name such as ib0, eth0 or lo"
_NAME_HELP = "letters, digits and _ . + - (at most 64, not starting with . + or -)"
_CHECKS = {
    "scheduler": _choice(SCHEDULERS),
    "mode": _choice(MODES),
    "nodes": _count(1, 100_000),
    "ntasks_per_node": _count(1, 4096),
    "cpus_per_task": _count(1, 4096),
    "mem_per_cpu": _memory,
    "mem": _memory,
    "walltime": _walltime,
    "account": _pattern(_NAME, _NAME_HELP),
    "queue": _pattern(_QUEUE, _NAME_HELP + ", or several of them separated by commas"),
    "job_name": _pattern(_NAME, _NAME_HELP, optional=False),
    "interface": _pattern(_INTERFACE, _INTERFACE_HELP),
    "scheduler_interface": _pattern(_INTERFACE, _INTERFACE_HELP),
    "protocol": _choice(PROTOCOLS),
    "tls_ca_file": _optional_path,
    "tls_cert": _optional_path,
    "tls_key": _optional_path,
    "scheduler_file": _scheduler_file,
    "modules": _lines(_pattern(_MODULE, "module names such as gcc/12.2 or python/3.11", optional=False)),
    "setup": _lines(_one_line),
    "python": _one_line,
    "client_script": _optional_path,
    "client_args": _lines(_one_line),
    "array": _pattern(_ARRAY, "a range of indices such as 1-100 or 0-99:2"),
    "array_throttle": _optional_count(1, 100_000),
    "pbs_flavor": _choice(PBS_FLAVORS),
    "lifetime_margin": _duration_seconds,
    "scheduler_timeout": _count(5, 86_400),
    "run_directory": _optional_path,
    "save_runs": _flag,
    "requeue": _flag,
}


def default_python() -> str:
    """The interpreter running hpcbridge, as dask-jobqueue defaults it: a venv's Python, not PATH's ``python3``.

    On a cluster the login node's environment is normally on a shared file system, so the same
    path works on the compute nodes; pass ``python`` when it does not.
    """
    return sys.executable or "python3"


def spec_fields() -> Iterable[str]:
    """The names of every field a user can set, in declaration order."""
    return (f.name for f in dataclasses.fields(JobSpec))
