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
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import InitVar, dataclass
from pathlib import Path
from typing import Any

from hpcbridge.addresses import is_loopback
from hpcbridge.job import requests
from hpcbridge.job.units import (
    DURATION_HELP,
    MAX_MEMORY_MIB,
    MAX_WALLTIME_SECONDS,
    MEMORY_HELP,
    WALLTIME_HELP,
    parse_duration_seconds,
    parse_memory_mib,
    parse_walltime_seconds,
)
from hpcbridge.private_files import scheduler_files_home

SCHEDULERS = ("slurm", "pbs", "lsf", "sge", "local", "ssh")
MODES = ("scheduler-file", "mpi", "array")
PROTOCOLS = ("tcp", "tls", "ucx")
PBS_FLAVORS = ("pbspro", "torque")
CONTAINER_RUNTIMES = ("apptainer", "singularity", "charliecloud", "podman")
CONTAINER_GPUS = ("nvidia", "amd")
JOB_ID_PLACEHOLDER = "{job_id}"
DEFAULT_SCHEDULER_FILE = "~/.hpcbridge/jobs/{job_id}/scheduler.json"  # as scripts spell it: the node's home


def default_scheduler_file() -> str:
    """Where a job writes its scheduler file when none is given: under the state home's ``jobs/``.

    That is :data:`DEFAULT_SCHEDULER_FILE` (``~`` stays for the node's home), or the absolute path
    under ``$HPCBRIDGE_HOME/jobs/`` when the state home was moved (a home directory that is full,
    slow or read-only on the nodes): the scheduler file, its certificates and, by default, the runs
    (:attr:`JobSpec.runs_directory`) then go there too, with the rest of what hpcbridge keeps.
    """
    folder = scheduler_files_home()
    if folder == Path(os.path.expanduser(os.path.dirname(os.path.dirname(DEFAULT_SCHEDULER_FILE)))):
        return DEFAULT_SCHEDULER_FILE
    return str(folder / JOB_ID_PLACEHOLDER / "scheduler.json")
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:0"

# Every pattern is matched whole (re.fullmatch: "$" alone would let a trailing newline through)
# and in ASCII (a scheduler reads no other digits or letters).
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}", re.ASCII)
_QUEUE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,63}(,[A-Za-z0-9_][A-Za-z0-9_.+@-]{0,63})*", re.ASCII)
_INTERFACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,14}", re.ASCII)
_MODULE = re.compile(r"(?!.*(^|/)\.\.(/|$))[A-Za-z0-9_][A-Za-z0-9_.+/@:-]{0,127}", re.ASCII)
_PYTHON_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}", re.ASCII)
_PYTHON_PATH = re.compile(r"(~/)?[A-Za-z0-9_./+@%=,: -]{1,4095}", re.ASCII)
_WORKER_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", re.ASCII)
_PLACEHOLDER = re.compile(r"\{[^}]*\}")
_ARRAY = re.compile(r"[0-9]{1,7}-[0-9]{1,7}(:[1-9][0-9]{0,6})?", re.ASCII)
_COUNT = re.compile(r"\s*\+?[0-9]{1,12}\s*", re.ASCII)
_FIELD_REFERENCE = re.compile(r"\{(\w+)\}")
# A host as ssh takes it: [user@]name-or-address, never starting with "-" (ssh would read an option).
_HOST = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_.-]{0,63}@)?[A-Za-z0-9_\[][A-Za-z0-9_.:%\[\]-]{0,252}", re.ASCII)
_HOST_HELP = "host names or addresses such as node1, 10.0.0.5 or me@node1 (not starting with - or .)"
# Where the dashboard listens: HOST:PORT, :PORT (every interface), [IPv6]:PORT.
_DASHBOARD = re.compile(r"(?P<host>|[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\]):(?P<port>[0-9]{1,5})",
                        re.ASCII)
MIN_LIFETIME_MARGIN = 30
DEFAULT_IDLE_TIMEOUT = 1800  # seconds without a client or a task before a cluster ends itself


class SpecError(ValueError):
    """A spec value that is not allowed: names the field, the value as given and what is allowed.

    ``allowed`` may mention other fields as ``{field}``; :meth:`describe` spells every field
    the way the caller knows it (a keyword in Python, ``--option`` on the command line), so
    a user reads the names they typed. ``source`` says where a value came from when it was not
    the caller (a key of the site profile and its file).
    """

    def __init__(self, field_name: str, value: object, allowed: str, source: str | None = None) -> None:
        self.field = field_name
        self.value = value
        self.allowed = allowed
        self.source = source
        super().__init__(field_name, value, allowed)

    def describe(self, name: Callable[[str], str] = str) -> str:
        """One line: the field (as ``name`` spells it, or the value's source), the value and what is allowed."""
        known = set(spec_fields()) | {"ntasks"}
        allowed = _FIELD_REFERENCE.sub(lambda m: name(m[1]) if m[1] in known else m[0], self.allowed)
        what = self.source or name(self.field)
        if self.value is None:
            return f"{what} is missing: {allowed}"
        return f"{what}: {self.value!r} is not allowed; expected {allowed}"

    def __str__(self) -> str:
        return self.describe()


class UnknownFieldError(SpecError):
    """A key that is no spec field (a typo in a site profile, say): named as unknown, with the nearest field."""

    def describe(self, name: Callable[[str], str] = str) -> str:
        """One line: the unknown key (and where it was set), the field it probably meant, every known field."""
        import difflib

        known = sorted(set(spec_fields()) | {"ntasks"})
        nearest = difflib.get_close_matches(str(self.field).replace("-", "_"), known, n=1)
        guess = f" did you mean {nearest[0]!r}?" if nearest else ""
        return f"unknown key {self.source or self.field}:{guess} known keys: {', '.join(known)}"


TCP_WARNING = ("protocol tcp: the cluster is not encrypted, and anyone who can reach the scheduler's "
               "port can run code as you")


DASHBOARD_WARNING = ("the dashboard listens beyond the scheduler's node, in plain HTTP: its pages (your function "
                     "and run names, every log line) and the token that opens them cross the network unencrypted "
                     f"(the default, {DEFAULT_DASHBOARD_ADDRESS}, is reached through the ssh tunnel hpcbridge "
                     "dashboard JOB prints)")


class SpecWarning(UserWarning):
    """Something a spec allows but a user probably did not mean; said once at render and submit."""

    def __init__(self, field_name: str, value: object, text: str) -> None:
        self.field = field_name
        self.value = value
        self.text = text
        super().__init__(field_name, value, text)

    def describe(self, name: Callable[[str], str] = str) -> str:
        """One line, with fields spelled by ``name`` as in :meth:`SpecError.describe`."""
        known = set(spec_fields())
        return _FIELD_REFERENCE.sub(lambda m: name(m[1]) if m[1] in known else m[0], self.text)

    def __str__(self) -> str:
        return self.describe()


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
    is the one the scheduler listens on, which clients must be able to reach. Protocol ``tls``
    (the default) encrypts and authenticates every connection: without ``tls_*`` files the job
    makes its own CA, certificate and key beside the scheduler file (see :mod:`hpcbridge.tls`);
    with them, all three are given and the scheduler, workers and clients share them. Workers
    stop taking work ``lifetime_margin`` before the walltime and leave cleanly instead of being
    killed. Dask's dashboard is plain HTTP without a login and shows task names, call stacks and
    logs: it listens on ``dashboard_address``, by default ``127.0.0.1:0`` (the scheduler's node
    only, any free port; ``hpcbridge dashboard JOB`` prints the ssh tunnel that reaches it), and
    the workers' own pages listen on the same host. With ``requeue`` (Slurm, scheduler-file mode) the job puts itself back in the queue
    shortly before its walltime or when preempted, and writes a new scheduler file at the same
    path when it starts again.

    With ``scheduler="ssh"`` the script runs on this machine (the scheduler with it) and starts
    the workers over ssh on ``hosts``, or on the lines of ``hostfile`` (one host per line, as
    ``dask-ssh --hostfile`` reads it; a host listed twice gets twice the workers); each line is a
    node of ``ntasks_per_node`` workers. ``ssh_options`` go on every ssh command line
    (``-F ~/.ssh/cluster``, ``-i key``); ssh runs in batch mode, with the user's keys.

    With ``scheduler="sge"`` (Grid Engine) the job asks for a slot per CPU from the parallel environment
    ``pe`` (a site's name, such as ``mpi``; needed for more than one slot) and its workers start on the
    hosts Grid Engine lists in ``$PE_HOSTFILE``.

    What else the job asks of its batch system (Slurm, PBS, LSF, Grid Engine; refused with local and ssh,
    which have none): ``qos``, node features (``constraint``), a ``reservation``, whole nodes
    (``exclusive``), GPUs (``gpus_per_task`` or ``gpus_per_node``; the request only), and
    ``directives``, lines hpcbridge has no option for (``--licenses=fluent:2``), written without
    their prefix; a directive may not set what an option sets (see :mod:`hpcbridge.job.requests`).

    ``python`` is the interpreter (``python3``, ``~/venv/bin/python``) or a command line that
    runs one (``apptainer exec /scratch/img.sif python3``, split as the shell splits it, so a
    path with spaces is quoted in it or given as a list of words); once built it is a tuple of
    words. Workers keep their scratch and spilled data in ``local_directory``, by default the
    node's own disk (``$TMPDIR``, else ``$SLURM_TMPDIR``, else ``/tmp``, read on each node when
    its workers start), never the job's working directory.

    GPU workers: with ``gpus_per_task`` (or ``gpus_per_node``, split evenly among the node's
    workers) in scheduler-file mode, each worker sees only its own GPUs (Slurm binds them
    through srun; on PBS and LSF the job sets ``CUDA_VISIBLE_DEVICES`` per worker from the GPUs
    the node gave it) and offers them as the Dask resource ``GPU``, which
    ``bridge.map(..., resources={"GPU": 1})`` asks for. ``worker_class`` is the Dask worker
    class (``dask_cuda.CUDAWorker``), checked at the job's start.

    Containers: with ``container`` (an image: a file, a folder or a name the runtime knows),
    the job's Python runs inside it through ``container_runtime`` (apptainer, singularity,
    charliecloud or podman): the scheduler, the workers and every check. The home folder, the
    scheduler file's folder (with the job's certificates), the run directory, the workers'
    scratch and ``container_binds`` are bound in at the same paths; with GPUs, apptainer and
    singularity get ``--nv`` (``container_gpu`` nvidia) or ``--rocm`` (amd).

    Fields accept text as users type it (``nodes="2"``, ``mem_per_cpu="4G"``,
    ``walltime="2h30m"``, ``lifetime_margin="30s"``) or numbers in the field's unit; once built,
    counts are ``int``, memory is ``int`` MiB and times are ``int`` seconds. ``ntasks`` (not a
    field) is Slurm's total task count: it sets ``ntasks_per_node`` when it divides evenly
    among the nodes.
    """

    scheduler: str = "local"
    mode: str = "scheduler-file"
    nodes: int | str = 1
    ntasks_per_node: int | str = 1
    cpus_per_task: int | str = 1
    mem_per_cpu: int | str | None = None  # MiB once built
    mem: int | str | None = None  # MiB once built
    walltime: int | str | None = None  # seconds once built
    account: str | None = None
    queue: str | None = None
    job_name: str = "hpcbridge"
    interface: str | None = None
    scheduler_interface: str | None = None
    protocol: str = "tls"
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    dashboard_address: str = DEFAULT_DASHBOARD_ADDRESS
    scheduler_file: str = dataclasses.field(default_factory=default_scheduler_file)
    modules: tuple[str, ...] | list[str] | str = ()
    setup: tuple[str, ...] | list[str] | str = ()
    python: str | tuple[str, ...] | list[str] = dataclasses.field(default_factory=lambda: (default_python(),))
    client_script: str | None = None
    client_args: tuple[str, ...] | list[str] | str = ()
    array: str | None = None
    array_throttle: int | str | None = None
    pbs_flavor: str = "pbspro"
    pe: str | None = None
    lifetime_margin: int | str = 300  # seconds once built
    scheduler_timeout: int | str = 120  # seconds
    run_directory: str | None = None
    save_runs: bool | str = True
    requeue: bool | str = False
    hosts: tuple[str, ...] | list[str] | str = ()
    hostfile: str | None = None
    ssh_options: tuple[str, ...] | list[str] | str = ()
    qos: str | None = None
    constraint: str | None = None
    reservation: str | None = None
    exclusive: bool | str = False
    gpus_per_task: int | str | None = None
    gpus_per_node: int | str | None = None
    directives: tuple[str, ...] | list[str] | str = ()
    local_directory: str | None = None
    worker_class: str | None = None
    container: str | None = None
    container_runtime: str | None = None
    container_binds: tuple[str, ...] | list[str] | str = ()
    container_gpu: str = "nvidia"
    idle_timeout: int | str = DEFAULT_IDLE_TIMEOUT  # seconds once built; 0: never
    ntasks: InitVar[int | str | None] = None

    def __post_init__(self, ntasks: int | str | None) -> None:
        given = {name: getattr(self, name) for name in _CHECKS}
        for name, check in _CHECKS.items():
            object.__setattr__(self, name, check(name, given[name]))
        if self.hostfile is not None:
            if self.hosts:
                raise SpecError("hosts", given["hosts"], "no {hosts} when {hostfile} is given (one host list)")
            object.__setattr__(self, "hosts", _read_hostfile(self.hostfile))
        if self.scheduler == "ssh" and self.hosts:
            if self.nodes not in (1, len(self.hosts)):
                raise SpecError("nodes", given["nodes"], f"the number of hosts ({len(self.hosts)}) with {{scheduler}} "
                                "ssh: each line of the host list is one node")
            object.__setattr__(self, "nodes", len(self.hosts))
        if ntasks is not None:
            self._set_ntasks(ntasks)
        if self.scheduler == "local" and self.interface is None:
            object.__setattr__(self, "interface", "lo")  # one machine: keep Dask off the network
        if self.scheduler_interface is None:
            object.__setattr__(self, "scheduler_interface", self.interface)
        self._check_combinations(given)
        self._check_workers_and_container(given)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> JobSpec:
        """Build a spec from a mapping (CLI options, a site profile), ignoring ``None`` values.

        An unknown key is an error that lists every known one, so a typo never passes silently.
        """
        known = set(spec_fields()) | {"ntasks"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UnknownFieldError(unknown[0], values[unknown[0]], "one of the fields " + ", ".join(sorted(known)))
        return cls(**{key: value for key, value in values.items() if value is not None})

    @classmethod
    def from_config(cls, values: Mapping[str, Any] | None = None, profile_modules: bool = True) -> JobSpec:
        """Build a spec from ``values`` with the site profile in Dask's config filling the rest.

        A centre writes its settings once, in a YAML file Dask reads (``~/.config/dask/`` or
        ``$DASK_CONFIG``, e.g. ``hpcbridge: {scheduler: slurm, slurm: {account: proj42,
        interface: ib0}}``) or as environment variables (``DASK_HPCBRIDGE__SLURM__ACCOUNT=proj42``).
        Values given here win over ``hpcbridge.<scheduler>.<field>``, which wins over the
        defaults; ``hpcbridge.scheduler`` picks the scheduler when none is given. ``modules``
        given here are loaded after the profile's (a site's compiler, then the user's package),
        unless ``profile_modules`` is false. A bad value from the profile is reported with its
        key and the file (or environment variable) it came from.
        """
        import dask.config

        from hpcbridge.job import profile

        given = {key: value for key, value in (values or {}).items() if value not in (None, ())}
        scheduler = given.get("scheduler") or dask.config.get("hpcbridge.scheduler", None) or "local"
        section = f"hpcbridge.{str(scheduler).lower()}"
        settings = dask.config.get(section, None) or {}
        if not isinstance(settings, Mapping):
            raise SpecError(section, settings, "a mapping of spec fields in Dask's config",
                            source=profile.source_of(section))
        merged = {str(key).replace("-", "_"): value for key, value in settings.items()}
        from_profile = {key: f"{section}.{original}" for key, original in zip(merged, settings)}
        if "ntasks" in given or "ntasks_per_node" in given:  # one quantity: what is given wins whole
            for key in ("ntasks", "ntasks_per_node"):
                merged.pop(key, None)
        if "modules" in given and profile_modules and merged.get("modules"):
            try:
                site = _CHECKS["modules"]("modules", merged["modules"])
            except SpecError as error:
                error.source = profile.describe(from_profile["modules"])
                raise
            mine = [module for module in _as_items(given["modules"]) if module not in site]
            given = {**given, "modules": (*site, *mine)}
        site_directives: tuple[object, ...] = ()
        if "directives" in given and merged.get("directives"):  # a site's required lines stay, the user's follow
            site_directives = _as_items(merged["directives"])
            mine = [line for line in _as_items(given["directives"]) if line not in site_directives]
            given = {**given, "directives": (*site_directives, *mine)}
        merged.update(given, scheduler=scheduler)
        try:
            return cls.from_dict(merged)
        except SpecError as error:
            from_site = error.field == "directives" and error.value in site_directives
            if (error.field in from_profile and (error.field not in given or from_site)) and error.source is None:
                error.source = profile.describe(from_profile[error.field])
            raise

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
    def gpus_per_worker(self) -> int | None:
        """GPUs each worker is bound to and offers as the Dask resource ``GPU`` (scheduler-file mode only).

        ``gpus_per_task``, or ``gpus_per_node`` split evenly among the node's workers; None without
        GPUs, and in mpi and array modes (their GPUs are the job's request only).
        """
        if self.mode != "scheduler-file":
            return None
        if self.gpus_per_task:
            return self.gpus_per_task
        if self.gpus_per_node:
            return self.gpus_per_node // self.ntasks_per_node
        return None

    @property
    def container_folders(self) -> tuple[str, ...]:
        """hpcbridge's own folders a container gets bound in (made before it starts): the scheduler
        file's, the run directory and the workers' scratch when named; TLS files' folders when given."""
        folders = [os.path.dirname(self.scheduler_file)] if self.mode != "array" else []
        if self.save_runs and self.mode != "array":
            folders.append(self.runs_directory)
        if self.local_directory:
            folders.append(self.local_directory)
        folders += [os.path.dirname(path) for path in (self.tls_ca_file, self.tls_cert, self.tls_key) if path]
        return tuple(dict.fromkeys(folders))

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
        """Seconds a worker works before it starts to leave (hpcbridge.cluster.drain), when a walltime is known and long enough."""
        if self.walltime is None or self.walltime - self.lifetime_margin < 60:
            return None
        return self.walltime - self.lifetime_margin

    def warnings(self) -> list[SpecWarning]:
        """What this spec allows but probably does not mean; rendering warns (:mod:`hpcbridge.job.render`,
        the one place that raises them), the CLI prints one line each."""
        found = []
        if self.mode != "array" and self.walltime is not None and self.worker_lifetime is None:
            found.append(SpecWarning("lifetime_margin", self.lifetime_margin, (
                f"{{walltime}} ({self.walltime} s) leaves less than a minute after {{lifetime_margin}} "
                f"({self.lifetime_margin} s): the workers start leaving (handing their work back) within a "
                "minute of the job's start; give a longer {walltime} or a shorter {lifetime_margin}")))
        if self.mode != "array" and self.protocol == "tcp":
            found.append(SpecWarning("protocol", "tcp", TCP_WARNING))
        if self.mode != "array" and not self.dashboard_loopback:
            found.append(SpecWarning("dashboard_address", self.dashboard_address,
                                     f"{{dashboard_address}} {self.dashboard_address}: " + DASHBOARD_WARNING))
        activated = setup_activation_warning(self)
        if activated is not None:
            found.append(activated)
        return found

    @property
    def dashboard_host(self) -> str:
        """The host part of ``dashboard_address``: ``127.0.0.1``, or ``""`` for every interface."""
        return self.dashboard_address.rpartition(":")[0]

    @property
    def dashboard_loopback(self) -> bool:
        """True when the dashboard listens on the scheduler's node only (a loopback address)."""
        return is_loopback(self.dashboard_host)

    @property
    def worker_dashboard_address(self) -> str:
        """Where each worker's own pages listen: the dashboard's host, any free port."""
        return f"{self.dashboard_host}:0"

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

    def _set_ntasks(self, ntasks: int | str) -> None:
        """Slurm's --ntasks: the total, spread evenly over the nodes (hpcbridge runs as many workers on each)."""
        total = _count(1, 4096 * 100_000)("ntasks", ntasks)
        if self.ntasks_per_node != 1 and total != self.tasks:
            raise SpecError("ntasks", ntasks, f"{{nodes}} x {{ntasks_per_node}} ({self.tasks}) when both are "
                            "given; give one of {ntasks} and {ntasks_per_node}")
        if total % self.nodes:
            raise SpecError("ntasks", ntasks, f"a multiple of {{nodes}} ({self.nodes}): every node runs as many "
                            "workers; or {nodes} 1")
        object.__setattr__(self, "ntasks_per_node", _count(1, 4096)("ntasks_per_node", total // self.nodes))

    def _check_combinations(self, given: Mapping[str, Any]) -> None:
        """Rules between fields; errors quote the values as the caller gave them."""
        if self.mem is not None and self.mem_per_cpu is not None:
            raise SpecError("mem", given["mem"], "either {mem} (per node) or {mem_per_cpu} (per CPU), not both; "
                            f"{{mem_per_cpu}} is {given['mem_per_cpu']!r}")
        if self.scheduler == "local" and self.nodes != 1:
            raise SpecError("nodes", given["nodes"], "1 with {scheduler} local (it runs on this machine)")
        if self.scheduler in ("local", "ssh") and self.mode != "scheduler-file":
            raise SpecError("mode", given["mode"], f"scheduler-file with {{scheduler}} {self.scheduler}")
        if self.scheduler == "ssh" and not self.hosts:
            raise SpecError("hostfile", None, "{scheduler} ssh starts its workers on a host list: give {hostfile} "
                            "(one host per line; a host listed twice gets two workers)")
        if self.scheduler != "ssh":
            for name in ("hosts", "hostfile", "ssh_options"):
                if getattr(self, name):
                    raise SpecError(name, given[name], "no host list or ssh options unless {scheduler} is ssh")
        if self.mode == "mpi" and self.workers < 1:
            needed = self.mpi_reserved_ranks + 1
            raise SpecError("ntasks_per_node", given["ntasks_per_node"],
                            f"at least {needed} tasks in all in {{mode}} mpi (scheduler, "
                            f"{'client, ' if self.client_script else ''}one worker); "
                            f"{{nodes}} x {{ntasks_per_node}} is {self.tasks}")
        if (self.client_script or self.client_args) and self.mode == "scheduler-file":
            name = "client_script" if self.client_script else "client_args"
            raise SpecError(name, given[name], "no client script or arguments unless {mode} is mpi or array")
        if self.mode == "array":
            for name in ("array", "client_script"):
                if getattr(self, name) is None:
                    raise SpecError(name, None, "{mode} array needs {array} (indices such as 1-100) "
                                    "and {client_script} (the script every element runs)")
            if self.nodes != 1:
                raise SpecError("nodes", given["nodes"], "1 in {mode} array (each element runs on one node)")
            if not self.array_indices:
                raise SpecError("array", given["array"], "a range FIRST-LAST[:STEP] with LAST >= FIRST and STEP >= 1")
        elif self.array is not None or self.array_throttle is not None:
            name = "array" if self.array is not None else "array_throttle"
            raise SpecError(name, given[name], "no job array unless {mode} is array")
        if self.requeue and (self.scheduler != "slurm" or self.mode != "scheduler-file"):
            raise SpecError("requeue", given["requeue"], "false unless {scheduler} is slurm and {mode} is "
                            "scheduler-file (the job requeues itself with scontrol requeue)")
        self._check_parallel_environment(given)
        self._check_requests(given)
        tls_files = ("tls_ca_file", "tls_cert", "tls_key")
        if self.protocol == "tls":
            given_files = [name for name in tls_files if getattr(self, name) is not None]
            for name in tls_files:
                if given_files and getattr(self, name) is None:
                    raise SpecError(name, None, "a file path: give all three of {tls_ca_file}, {tls_cert} and "
                                    "{tls_key}, or none (the job then makes its own)")
        else:
            for name in tls_files:
                if getattr(self, name) is not None:
                    raise SpecError(name, given[name], "no TLS files unless {protocol} is tls")


    def _check_workers_and_container(self, given: Mapping[str, Any]) -> None:
        """GPU workers, the worker class and the container: where hpcbridge can start them."""
        if self.gpus_per_node and self.mode == "scheduler-file" and self.gpus_per_node % self.ntasks_per_node:
            raise SpecError("gpus_per_node", given["gpus_per_node"], f"a multiple of {{ntasks_per_node}} "
                            f"({self.ntasks_per_node}): each worker is bound to GPUs of its own; or {{gpus_per_task}}")
        if self.worker_class and self.mode != "scheduler-file":
            raise SpecError("worker_class", given["worker_class"], "no {worker_class} unless {mode} is "
                            "scheduler-file (dask-mpi and job arrays start their workers themselves)")
        if not self.container:
            for name in ("container_runtime", "container_binds"):
                if getattr(self, name):
                    raise SpecError(name, given[name], "no {%s} without {container} (the image to run in)" % name)
            return
        if self.scheduler == "ssh":
            raise SpecError("container", given["container"], "no {container} with {scheduler} ssh (its hosts run "
                            "the workers with {python}: give a command line that runs the container there)")
        if self.container_runtime is None:
            raise SpecError("container_runtime", None, "the runtime that runs {container}: one of "
                            + ", ".join(CONTAINER_RUNTIMES) + " (a site profile may set it)")

    def _check_parallel_environment(self, given: Mapping[str, Any]) -> None:
        """Grid Engine's slots come from a parallel environment the site names: asked for once a job
        needs more than one slot, refused elsewhere (no other batch system has one)."""
        if self.scheduler != "sge":
            if self.pe is not None:
                raise SpecError("pe", given["pe"], "no {pe} unless {scheduler} is sge (a Grid Engine parallel "
                                "environment)")
            return
        slots = self.sge_slots
        if self.pe is None and slots > 1:
            raise SpecError("pe", None, f"the Grid Engine parallel environment that gives the job its {slots} "
                            "slots (qconf -spl lists them; a site profile sets it as hpcbridge.sge.pe)")

    @property
    def sge_slots(self) -> int:
        """Grid Engine slots the job asks for: a slot per CPU ({nodes} x {ntasks_per_node} x {cpus_per_task};
        one element's in array mode)."""
        nodes = 1 if self.mode == "array" else self.nodes
        return nodes * self.ntasks_per_node * self.cpus_per_task

    def _check_requests(self, given: Mapping[str, Any]) -> None:
        """What the job asks of its batch system: only where there is one, and each in a form it can say."""
        asked = [name for name in requests.REQUEST_FIELDS if getattr(self, name)]
        if self.scheduler not in requests.BATCH_SCHEDULERS:
            for name in asked:
                raise SpecError(name, self.directives[0] if name == "directives" else given[name], f"no {{{name}}} unless {{scheduler}} is slurm, pbs, lsf or sge "
                                f"({self.scheduler} starts its workers itself: there is no batch system to ask)")
            return
        if self.gpus_per_task and self.gpus_per_node:
            raise SpecError("gpus_per_node", given["gpus_per_node"], "either {gpus_per_task} or {gpus_per_node}, not "
                            f"both; {{gpus_per_task}} is {given['gpus_per_task']!r}")
        if self.qos and (self.scheduler == "lsf" or (self.scheduler == "pbs" and self.pbs_flavor == "pbspro")):
            system = "LSF" if self.scheduler == "lsf" else "PBS Pro"
            raise SpecError("qos", given["qos"], f"no {{qos}} with {system}, which has no QOS (a queue, or a "
                            "{directives} line your site documents, such as LSF's '-sla NAME', does that job)")
        if self.scheduler == "sge":
            for name in requests.SGE_WITHOUT:
                if getattr(self, name):
                    raise SpecError(name, given[name], f"no {{{name}}} with Grid Engine, which has no such request of "
                                    "its own (your site's complexes do that: a {directives} line such as '-l NAME=VALUE')")
        if self.reservation and self.scheduler == "pbs" and self.pbs_flavor == "pbspro" and self.queue:
            raise SpecError("reservation", given["reservation"], "a PBS Pro reservation is a queue (the job is "
                            f"submitted with -q RESERVATION): give one of {{reservation}} and {{queue}} (it is "
                            f"{given['queue']!r}, from the options or the site profile)")
        if self.constraint is not None:
            try:
                requests.check_constraint(self.scheduler, self.constraint)
            except ValueError as error:
                raise SpecError("constraint", given["constraint"], str(error)) from None
        for line in self.directives:
            for owner in requests.directive_owners(self.scheduler, line):
                if owner.always:
                    raise SpecError("directives", line, f"no directive for what hpcbridge sets from {{{owner.field}}} "
                                    f"(it writes that {self.scheduler} option itself): use {{{owner.field}}}")
                if getattr(self, owner.field):
                    raise SpecError("directives", line, f"a directive that does not set what {{{owner.field}}} "
                                    f"({given[owner.field]!r}) sets: give one of them")


def _as_items(value: object) -> tuple[object, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def _choice(options: tuple[str, ...]):
    def check(name: str, value: object) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise SpecError(name, value, "one of " + ", ".join(options))
        return text

    return check


def _count(low: int, high: int):
    def check(name: str, value: object) -> int:
        allowed = f"a whole number from {low} to {high}"
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, str) and _COUNT.fullmatch(value))):
            raise SpecError(name, value, allowed)
        number = int(value)
        if not low <= number <= high:
            raise SpecError(name, value, allowed)
        return number

    return check


def _optional_count(low: int, high: int):
    whole = _count(low, high)

    def check(name: str, value: object) -> int | None:
        return None if value is None else whole(name, value)

    return check


def _memory(name: str, value: object) -> int | None:
    """Memory in MiB: an int is MiB already, text is parsed (``4G``)."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_MEMORY_MIB:
            raise SpecError(name, value, MEMORY_HELP)
        return value
    try:
        if not isinstance(value, str):
            raise ValueError
        return parse_memory_mib(value)
    except ValueError:
        raise SpecError(name, value, MEMORY_HELP) from None


def _walltime(name: str, value: object) -> int | None:
    """A wall time in seconds: an int is seconds already, text is parsed as sbatch --time reads it."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 60 <= value <= MAX_WALLTIME_SECONDS:
            raise SpecError(name, value, f"from 60 to {MAX_WALLTIME_SECONDS} seconds (an int), or {WALLTIME_HELP}")
        return value
    try:
        if not isinstance(value, str):
            raise ValueError
        return parse_walltime_seconds(value)
    except ValueError:
        raise SpecError(name, value, WALLTIME_HELP) from None


def _lifetime_margin(name: str, value: object) -> int:
    """Seconds before the walltime that workers retire: an int is seconds, text is parsed (``30s``, ``5m``)."""
    allowed = f"{DURATION_HELP}, at least {MIN_LIFETIME_MARGIN} s (workers need that long to close)"
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            seconds = value
        elif isinstance(value, str):
            seconds = parse_duration_seconds(value)
        else:
            raise ValueError
    except ValueError:
        raise SpecError(name, value, allowed) from None
    if not MIN_LIFETIME_MARGIN <= seconds <= MAX_WALLTIME_SECONDS:
        raise SpecError(name, value, allowed)
    return seconds


def _idle_timeout(name: str, value: object) -> int:
    """Seconds a cluster may sit without a client or a task before it ends itself; 0 is never."""
    allowed = f"{DURATION_HELP}, or 0 for never"
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            seconds = value
        elif isinstance(value, str):
            seconds = 0 if value.strip() == "0" else parse_duration_seconds(value)
        else:
            raise ValueError
    except ValueError:
        raise SpecError(name, value, allowed) from None
    if not 0 <= seconds <= MAX_WALLTIME_SECONDS:
        raise SpecError(name, value, allowed)
    return seconds


_SHELL_WORDS = frozenset("if then else elif fi case esac for select while until do done in function time coproc".split())


def _pattern(regex: re.Pattern[str], allowed: str, optional: bool = True):
    def check(name: str, value: object) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise SpecError(name, value, allowed)
        if value in _SHELL_WORDS:
            raise SpecError(name, value, allowed + ", and not a word of the shell's syntax such as then or done")
        return value

    return check


def _one_line(name: str, value: object) -> str:
    """Printable text on one line: no newline, NUL, escape or other control or line-separator character."""
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise SpecError(name, value, "one non-empty line of printable text (no newline or control characters)")
    return value


def _setup_line(name: str, value: object) -> str:
    """A shell command on one line that is complete by itself, so it cannot swallow the script around it."""
    text = _one_line(name, value)
    allowed = ("one complete shell command on one line, e.g. 'source ~/venv/bin/activate' "
               "(no heredoc, no trailing backslash, no unclosed quote or bracket, not only a comment)")
    if text.lstrip().startswith("#") or text.rstrip().endswith("\\") or re.search(r"<<(?!<)", text):
        raise SpecError(name, value, allowed)
    bash = shutil.which("bash")
    if bash and subprocess.run([bash, "-n", "-c", text], capture_output=True, timeout=10).returncode != 0:
        raise SpecError(name, value, allowed)
    return text


def _lines(item_check):
    def check(name: str, value: object) -> tuple[str, ...]:
        if value is not None and not isinstance(value, (str, list, tuple)):
            raise SpecError(name, value, "a string or a list of strings")
        return tuple(item_check(name, item) for item in _as_items(value))

    return check


def _scheduler_file(name: str, value: object) -> str:
    text = _one_line(name, value).strip()
    stray = [p for p in _PLACEHOLDER.findall(text) if p != JOB_ID_PLACEHOLDER]
    if stray or text.endswith("/"):
        raise SpecError(name, value, "a file path, optionally containing {job_id} and starting with ~/")
    return _optional_path(name, value)


def _literal(name: str, value: object) -> str:
    """One line of text that goes into the script literally, so it may not look like it expands."""
    text = _one_line(name, value)
    if "$" in text or "`" in text:
        raise SpecError(name, value, "a literal value: $VARIABLES and `commands` are not expanded here "
                        "(paths may start with ~/ and scheduler files contain {job_id})")
    return text


def _optional_path(name: str, value: object) -> str | None:
    """A file path as the compute nodes see it: absolute (relative ones resolve here) or ~/..."""
    if value is None:
        return None
    text = _literal(name, value).strip()
    if text.startswith("~") and not text.startswith("~/"):
        raise SpecError(name, value, "a path starting with ~/ (your own home), not another user's")
    if text.startswith("~/") and os.path.normpath(text[2:]).startswith(".."):
        raise SpecError(name, value, "a path inside your own home after ~/ (.. leads out of it)")
    return text if text.startswith("~/") or os.path.isabs(text) else os.path.abspath(text)


def _dashboard_address(name: str, value: object) -> str:
    """HOST:PORT for the dashboard to listen on; PORT 0 is any free one, an empty HOST every interface."""
    allowed = (f"HOST:PORT such as {DEFAULT_DASHBOARD_ADDRESS} (the scheduler's node only, any free port: the "
               "default), :8787 (every interface) or 10.0.0.5:8787; PORT from 0 (any free one) to 65535")
    match = _DASHBOARD.fullmatch(value) if isinstance(value, str) else None
    if match is None or int(match["port"]) > 65535 or match["host"].startswith(("-", ".")):
        raise SpecError(name, value, allowed)
    return value


_PYTHON_HELP = ("an interpreter's name such as python3 or its path such as ~/venv/bin/python or /opt/py/bin/python "
                "(letters, digits, spaces and _ . / + - @ % = , :), or a command line that runs one, such as "
                "'apptainer exec /scratch/img.sif python3' (a path with spaces in it quoted; no $ or `)")


def _python(name: str, value: object) -> tuple[str, ...]:
    """The interpreter as words: a name found on PATH (python3), a path, or a command line that runs one.

    Text is one word when it has no space or quote, or when it names a file here (a path with
    spaces); otherwise it is split as the shell splits it. A list or tuple is the words already.
    The first word is the program (a relative path is resolved here, as every path is); the
    others go to it as they are, each quoted in the script, never shell syntax.
    """
    if isinstance(value, str):
        text = _one_line(name, value)
        if not re.search(r"[\s'\"\\]", text) or (text == text.strip() and "/" in text and
                                                  os.path.isfile(os.path.expanduser(text))):
            words = [text]
        else:
            try:
                words = shlex.split(text)
            except ValueError:
                raise SpecError(name, value, _PYTHON_HELP) from None
    elif isinstance(value, (list, tuple)) and all(isinstance(word, str) for word in value):
        words = list(value)
    else:
        raise SpecError(name, value, _PYTHON_HELP)
    if not words:
        raise SpecError(name, value, _PYTHON_HELP)
    program = words[0]
    if program.startswith("~"):
        _optional_path(name, program)  # another user's ~name, or ~/.. out of the home
    if "/" not in program:
        if not _PYTHON_NAME.fullmatch(program) or program in _SHELL_WORDS:
            raise SpecError(name, value, _PYTHON_HELP)
    elif not _PYTHON_PATH.fullmatch(program) or program.endswith("/") or program != program.strip():
        raise SpecError(name, value, _PYTHON_HELP)
    else:
        program = _optional_path(name, program)
    for word in words[1:]:
        if not word or not word.isprintable() or "$" in word or "`" in word:
            raise SpecError(name, value, _PYTHON_HELP)
    return (program, *words[1:])


def _worker_class(name: str, value: object) -> str | None:
    """A Dask worker class by its dotted name (``dask_cuda.CUDAWorker``); the job checks it imports."""
    if value is None:
        return None
    if not isinstance(value, str) or not _WORKER_CLASS.fullmatch(value.strip()):
        raise SpecError(name, value, "a worker class by its module and name, such as dask_cuda.CUDAWorker or "
                        "distributed.Nanny (letters, digits and _ with dots)")
    return value.strip()


def _container(name: str, value: object) -> str | None:
    """An image: a path (resolved here when it exists here, ~/ kept), or a name or URI the runtime knows."""
    if value is None:
        return None
    text = _literal(name, value).strip()
    if text.startswith("-") or any(character.isspace() for character in text):
        raise SpecError(name, value, "an image: a file or folder such as /scratch/img.sif or ~/images/py, or a "
                        "name the runtime knows such as docker://python:3.12 (no spaces, not starting with -)")
    if text.startswith("~") or text.startswith("/"):
        return _optional_path(name, text)
    if "://" not in text and os.path.exists(text):
        return os.path.abspath(text)
    return text


def _container_bind(name: str, value: object) -> str:
    """A folder bound into the container at the same path: absolute or ~/ (relative ones resolve here)."""
    path = _optional_path(name, value)
    if path is None or ":" in path or "," in path:
        raise SpecError(name, value, "a folder's path (bound at the same path inside; no : or ,)")
    return path


def _constraint_text(name: str, value: object) -> str | None:
    """Node features, checked as text here; :func:`hpcbridge.job.requests.check_constraint` knows each system's syntax."""
    return None if value is None else _one_line(name, value).strip()


def _directive(name: str, value: object) -> str:
    try:
        return requests.check_directive(value)
    except ValueError as error:
        raise SpecError(name, value, str(error)) from None


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise SpecError(name, value, "true or false (also yes/no, on/off, 1/0)")


def _ssh_options(name: str, value: object) -> tuple[str, ...]:
    """Words for every ssh command line: text as typed (``-F ~/.ssh/cluster -o Port=2222``) or a list of words.

    The renderer quotes each word, so none can add a command; a word can only be an ssh argument.
    """
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as error:
            raise SpecError(name, value, f"ssh options as on ssh's command line ({error})") from None
    return _lines(_one_line)(name, value)


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
    "dashboard_address": _dashboard_address,
    "scheduler_file": _scheduler_file,
    "modules": _lines(_pattern(_MODULE, "module names such as gcc/12.2 or python/3.11 (letters, digits and "
                                        "_ . + / @ : -, no .. step)", optional=False)),
    "setup": _lines(_setup_line),
    "python": _python,
    "client_script": _optional_path,
    "client_args": _lines(_literal),
    "array": _pattern(_ARRAY, "a range of indices such as 1-100 or 0-99:2"),
    "array_throttle": _optional_count(1, 100_000),
    "pbs_flavor": _choice(PBS_FLAVORS),
    "pe": _pattern(_NAME, _NAME_HELP),
    "lifetime_margin": _lifetime_margin,
    "scheduler_timeout": _count(5, 86_400),
    "run_directory": _optional_path,
    "save_runs": _flag,
    "requeue": _flag,
    "hosts": _lines(_pattern(_HOST, _HOST_HELP, optional=False)),
    "hostfile": _optional_path,
    "ssh_options": _ssh_options,
    "qos": _pattern(_NAME, _NAME_HELP),
    "constraint": _constraint_text,
    "reservation": _pattern(_NAME, _NAME_HELP),
    "exclusive": _flag,
    "gpus_per_task": _optional_count(1, 1024),
    "gpus_per_node": _optional_count(1, 1024),
    "directives": _lines(_directive),
    "local_directory": _optional_path,
    "worker_class": _worker_class,
    "container": _container,
    "container_runtime": lambda name, value: None if value is None else _choice(CONTAINER_RUNTIMES)(name, value),
    "container_binds": _lines(_container_bind),
    "container_gpu": _choice(CONTAINER_GPUS),
    "idle_timeout": _idle_timeout,
}


def _read_hostfile(path: str) -> tuple[str, ...]:
    """The hosts of a host list: one per line as dask-ssh reads it; blank lines and ``#`` comments skipped.

    The file is read when the spec is built (on the machine that submits), and the rendered
    script lists the hosts, so the job starts the same workers however the file changes later.
    """
    try:
        text = open(os.path.expanduser(path), encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError("hostfile", path, f"a readable text file with one host per line "
                        f"({getattr(error, 'strerror', None) or error})") from None
    hosts = []
    for number, line in enumerate(text.splitlines(), start=1):
        host = line.split("#", 1)[0].strip()
        if host and (_HOST.fullmatch(host) is None or host in _SHELL_WORDS):
            raise SpecError("hostfile", f"{path}, line {number}: {line.strip()}", _HOST_HELP + ", one per line")
        if host:
            hosts.append(host)
    if not hosts:
        raise SpecError("hostfile", path, "a file with at least one host (one per line; # starts a comment)")
    return tuple(hosts)


_ACTIVATION = re.compile(r"(?:^|[;&|]\s*)(?:source|\.)\s+(\S+)/bin/activate\b|\b(?:conda|mamba|micromamba)\s+activate\b")


def setup_activation_warning(spec: JobSpec) -> SpecWarning | None:
    """A warning when ``setup`` activates a Python environment that the job will not run.

    The job runs ``PYTHON``, by default the interpreter running hpcbridge; a ``source
    .../bin/activate`` (or ``conda activate``) in ``setup`` changes PATH but not ``PYTHON``, so the
    environment it activates is never used unless ``python`` names its interpreter.
    """
    if tuple(spec.python) != (default_python(),):  # a Python of its own (a path, or a command line)
        return None
    for line in spec.setup:
        match = _ACTIVATION.search(line)
        if match is None:
            continue
        venv = match.group(1)
        if venv and os.path.realpath(os.path.expanduser(venv)) == os.path.realpath(sys.prefix):
            continue  # activates the environment the job runs anyway
        return SpecWarning("setup", line, (
            f"{{setup}} {line!r} activates an environment, but the job runs {{python}} {spec.python[0]} (the Python "
            "running hpcbridge), so that environment's Python is never used; pass {python} with its interpreter"
            + (f", e.g. {venv}/bin/python" if venv else "")))
    return None


def default_python() -> str:
    """The interpreter running hpcbridge, as dask-jobqueue defaults it: a venv's Python, not PATH's ``python3``.

    On a cluster the login node's environment is normally on a shared file system, so the same
    path works on the compute nodes; pass ``python`` when it does not.
    """
    return sys.executable or "python3"


def spec_fields() -> Iterable[str]:
    """The names of every field a user can set, in declaration order."""
    return (f.name for f in dataclasses.fields(JobSpec))
