"""The ``hpcbridge`` command: thin click commands over spec → render → submit → connect.

Every failure a user can cause (a bad option value, a batch command that refuses, a job that
does not exist, a cluster that does not answer) ends as one ``Error:`` line and a non-zero exit
code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from hpcbridge._version import __version__
from hpcbridge.backends import BatchCommandError, JobNotFound, get_backend
from hpcbridge.job.spec import (
    CONTAINER_GPUS,
    CONTAINER_RUNTIMES,
    MODES,
    PBS_FLAVORS,
    PROTOCOLS,
    SCHEDULERS,
    JobSpec,
    SpecError,
    SpecWarning,
    spec_fields,
)

_RAW_ARGS = "hpcbridge.raw_args"


def _nearest_option(error: click.NoSuchOption) -> None:
    """Keep only the nearest of click's suggestions for a mistyped option.

    click offers every option within a loose likeness, so ``--ntask`` got "--ntasks, --tls-key";
    the one most like what was typed is the one meant.
    """
    import difflib

    if error.possibilities and len(error.possibilities) > 1:
        error.possibilities = difflib.get_close_matches(error.option_name, list(error.possibilities), n=1,
                                                        cutoff=0) or error.possibilities[:1]


class _Command(click.Command):
    """A command whose mistyped option is answered with the one nearest option."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            _nearest_option(error)
            raise


class _Group(click.Group):
    """Turn the errors users cause into one-line messages instead of tracebacks."""

    command_class = _Command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as error:
            _nearest_option(error)
            error.message += _misplaced_option_hint(self, error.option_name, args)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        from hpcbridge.client.bridge import ConnectError
        from hpcbridge.job.render import RenderError

        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # the reader stopped reading (| head): click exits quietly
        except (BatchCommandError, JobNotFound, ConnectError, RenderError) as error:
            raise click.ClickException(str(error)) from None
        except OSError as error:
            if error.filename is not None and error.strerror:
                raise click.ClickException(f"{error.filename}: {error.strerror}") from None
            raise click.ClickException(str(error)) from None


def _misplaced_option_hint(group: click.Group, option: str, args: list[str]) -> str:
    """A hint for ``hpcbridge --scheduler slurm submit``: the option belongs after the command."""
    command = next((arg for arg in args if arg in group.commands), None)
    if command is None:
        return f" (options of a command go after it, e.g. hpcbridge render {option} ...)"
    if any(option in param.opts for param in group.commands[command].params):
        return f" (options go after the command: hpcbridge {command} {option} ...)"
    return f" (for the options of {command}: hpcbridge {command} --help)"


class _SpecCommand(_Command):
    """A command whose options build a spec: errors name each option as the user spelled it."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_RAW_ARGS] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SpecError as error:
            raise click.UsageError(error.describe(lambda field: option_as_typed(ctx, field)), ctx=ctx) from None


def option_as_typed(ctx: click.Context, field: str) -> str:
    """The option for spec ``field`` as the user spelled it (``--time``, ``-c``), else its main spelling."""
    params = {param.name: param for param in ctx.command.params if isinstance(param, click.Option)}
    param = params.get(field) or next(
        (p for p in params.values() if "--" + field.replace("_", "-") in p.opts), None)  # --adapt is adapt_range
    if param is None:
        return field
    spellings = {opt: param for param in params.values() for opt in param.opts}
    typed = None
    args = iter(ctx.meta.get(_RAW_ARGS, []))
    for arg in args:
        if arg == "--":
            break
        name, equals, _ = arg.partition("=")
        if name in spellings:
            if spellings[name] is param:
                typed = name
            if not equals and not spellings[name].is_flag:
                next(args, None)  # the option's value, which may look like an option itself
        elif not arg.startswith("--"):
            for opt in param.opts:
                if len(opt) == 2 and arg.startswith(opt) and len(arg) > 2:
                    typed = opt  # -c4
    return typed or max(param.opts, key=lambda opt: (opt.startswith("--"), opt == "--" + field.replace("_", "-")))


def warn(text: str) -> None:
    """One line on stderr: something allowed that the user probably did not mean."""
    click.echo(f"Warning: {text}", err=True)


_SHOW_WARNING = warnings.showwarning


def _show_warning(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """Show a job option's warning as one line, its options spelled as the user typed them; others as Python does."""
    if not isinstance(message, SpecWarning):
        _SHOW_WARNING(message, category, *args, **kwargs)
    else:
        context = click.get_current_context(silent=True)
        text = message.describe(lambda field: option_as_typed(context, field) if context else field)
        if message.field in ("protocol", "dashboard_address"):  # who can reach the cluster: as the job says it too
            click.echo(f"hpcbridge: warning: {text}", err=True)
        else:
            warn(text)


_RENDER_EPILOG = """\b
Examples:
  hpcbridge render --scheduler slurm --nodes 2 --ntasks-per-node 4 -c 8 \\
      --mem-per-cpu 4G --time 2:00:00 --account proj42 --partition compute \\
      --interface ib0 --module python/3.11 -o dask.sh
  hpcbridge render --scheduler pbs --pbs-flavor torque --ntasks 8 --walltime 90m
  hpcbridge render --scheduler slurm --mode array --array 1-100 \\
      --array-throttle 10 --client-script chunk.py

\b
Accepted spellings: --time for --walltime, -N --nodes, -n --ntasks (the
total, spread evenly over the nodes), -c --cpus-per-task, -A --account,
-p/--partition for --queue, -J --job-name. Wall times: 30 (minutes), 25:00
(MM:SS), 02:00:00, 1-12:00:00, 1-12, 90m, 2h30m, 1d. Memory: 4G, 512M, 16GiB,
plain numbers are MiB. --lifetime-margin: 30s, 5m, 300 (seconds), at least 30 s.
--module adds to the site profile's modules; --no-profile-modules loads only yours.
"""

_SUBMIT_EPILOG = """\b
Examples:
  hpcbridge submit --scheduler slurm -N 2 --ntasks-per-node 4 --interface ib0 --json
  hpcbridge submit --scheduler local --ntasks 2     # two workers on this machine
  hpcbridge submit --scheduler lsf --time 4h --queue normal --mem-per-cpu 2G

\b
Every option of render is accepted here too (hpcbridge render --help).
"""


ADAPTIVE_SCHEDULERS = ("slurm", "pbs", "lsf", "sge")
_NOT_ADAPTIVE = {"mode", "nodes", "client_script", "client_args", "array", "array_throttle", "hostfile", "ssh_options"}


def spec_options(command: Callable[..., Any] | None = None, *, adaptive: bool = False) -> Callable[..., Any]:
    """The options that describe a job, shared by ``render`` and ``submit``; they build a spec.

    With ``adaptive`` (``up``) only what an adaptive cluster accepts is offered: a batch system
    (it submits worker jobs), one node per worker job, no MPI, array or ssh options (hidden,
    and refused with the reason when given); and a missing batch system is said as such
    instead of refusing the default, local.
    """
    if command is None:
        return functools.partial(spec_options, adaptive=adaptive)
    options = [
        click.option("--scheduler", type=click.Choice(ADAPTIVE_SCHEDULERS if adaptive else SCHEDULERS),
                     help="The batch system the script is for.  [default: hpcbridge.scheduler in Dask's config, "
                     + ("else none: one must be given]" if adaptive else "else local]")),
        click.option("--mode", type=click.Choice(MODES),
                     help="scheduler-file: a scheduler and separately started workers; mpi: one MPI program "
                     "(dask-mpi); array: independent elements, no cluster.  [default: scheduler-file]"),
        click.option("--nodes", "-N", "nodes", help="Nodes to allocate.  [default: 1]"),
        click.option("--ntasks-per-node", help="Dask workers per node.  [default: 1]"),
        click.option("--ntasks", "-n", "ntasks", help="Dask workers in all, as Slurm's --ntasks: spread evenly over "
                     "--nodes (a multiple of it), or all on one node."),
        click.option("--cpus-per-task", "-c", "cpus_per_task", help="CPUs (and threads) per worker.  [default: 1]"),
        click.option("--mem-per-cpu", help="Memory per CPU, e.g. 4G (Slurm's M, G are MiB, GiB; plain numbers MiB)."),
        click.option("--mem", help="Memory per node, e.g. 64G."),
        click.option("--walltime", "--time", "-t", "walltime", help="Wall time: 30 (minutes), 25:00 (MM:SS), "
                     "HH:MM:SS, D-HH:MM:SS, D-HH, 90m, 2h30m or 1d."),
        click.option("--account", "-A", "account", help="Account (project) to charge."),
        click.option("--queue", "--partition", "-p", "queue", help="Queue or partition."),
        click.option("--job-name", "-J", "job_name", help="The job's name.  [default: hpcbridge]"),
        click.option("--interface", help="Network interface for the workers, e.g. ib0 for InfiniBand."),
        click.option("--scheduler-interface", help="Network interface the scheduler listens on, if clients "
                     "cannot reach the workers' one.  [default: --interface]"),
        click.option("--protocol", type=click.Choice([p for p in PROTOCOLS if not adaptive or p != "ucx"]), help="Dask's communication protocol; tcp lets anyone who reaches the scheduler in.  [default: tls, with certificates the job makes]"),
        click.option("--tls-ca-file", help="With --protocol tls: the CA certificate (PEM).  [default: the job makes its own]"),
        click.option("--tls-cert", help="With --protocol tls: the certificate the cluster presents (PEM)."),
        click.option("--tls-key", help="With --protocol tls: the certificate's private key (PEM)."),
        click.option("--dashboard-address", help="HOST:PORT where Dask's dashboard listens (plain HTTP; it lets in "
                     "only a browser with the job's token); any host but 127.0.0.1 sends its pages and the token "
                     "over the network unencrypted (a warning). hpcbridge dashboard JOB prints the ssh tunnel to it.  "
                     "[default: 127.0.0.1:0, the scheduler's node only, any free port]"),
        click.option("--scheduler-file", help="Where the job writes the scheduler's address; "
                     "{job_id} is replaced by the job id.  [default: ~/.hpcbridge/jobs/{job_id}/scheduler.json, "
                     "or $HPCBRIDGE_HOME/jobs/{job_id}/scheduler.json when that is set]"),
        click.option("--module", "modules", multiple=True, help="Environment module to load (repeatable); loaded "
                     "after the site profile's modules."),
        click.option("--no-profile-modules", "no_profile_modules", is_flag=True, default=False,
                     help="Load only the --module given here, not the site profile's modules."),
        click.option("--setup", multiple=True, help="Shell command to run before Dask starts (repeatable)."),
        click.option("--python", help="Python interpreter on the compute nodes; it needs distributed. A path, or a "
                     "command line that runs one, e.g. 'apptainer exec /scratch/img.sif python3' (split as the shell "
                     "splits it).  [default: the Python running hpcbridge]"),
        click.option("--client-script", help="With --mode mpi: a Python script that MPI rank 1 runs as the client "
                     "(the cluster ends when it returns); with --mode array: the script each element runs."),
        click.option("--client-arg", "client_args", multiple=True, help="An argument for the client script (repeatable)."),
        click.option("--array", help="With --mode array: the elements' indices, e.g. 1-100 or 0-99:2."),
        click.option("--array-throttle", help="With --mode array: at most this many elements run at once."),
        click.option("--pbs-flavor", type=click.Choice(PBS_FLAVORS), default=None,
                     help="PBS resource syntax: select=... (pbspro, also OpenPBS) or nodes=...:ppn=... (torque).  "
                     "[default: pbspro]"),
        click.option("--pe", help="Grid Engine (--scheduler sge): the parallel environment that gives the job its "
                     "slots, a slot per CPU (qconf -spl lists them); needed for more than one slot.  [default: the site "
                     "profile's hpcbridge.sge.pe]"),
        click.option("--lifetime-margin", help="Workers retire this long before the walltime: 30s, 5m, 300 "
                     "(plain numbers are seconds), at least 30 s.  [default: 5m]"),
        click.option("--run-directory", help="Where finished chunks of every map are saved, so results outlive "
                     "the job.  [default: runs/ beside the scheduler files]"),
        click.option("--no-save-runs", "save_runs", flag_value=False, default=None,
                     help="Do not save finished chunks to disk (results live only in the cluster's memory)."),
        click.option("--hostfile", help="With --scheduler ssh: a file with one host per line (repeat a host for "
                     "more workers there); the workers start there over ssh."),
        click.option("--ssh-options", help="With --scheduler ssh: options for every ssh command, as on its command "
                     "line, e.g. '-F ~/.ssh/cluster' or '-i ~/.ssh/id_cluster'."),
        click.option("--requeue", is_flag=True, default=None,
                     help="Slurm: shortly before the walltime (or when preempted) the job goes back in the queue "
                     "and its cluster starts again, writing a new scheduler file; runs resume from disk."),
        click.option("--qos", help="Slurm (and Torque's -l qos): the quality of service to run under."),
        click.option("--constraint", "-C", "constraint", help="Node features, e.g. ssd or ssd&avx2 (Slurm also "
                     "takes | [ ] and *N); PBS puts them in the select statement, LSF in select[...]."),
        click.option("--reservation", help="Run in this reservation (Slurm --reservation, PBS Pro's reservation "
                     "queue, Torque -l advres, LSF -U, Grid Engine -ar)."),
        click.option("--exclusive", is_flag=True, default=None, help="Whole nodes: no other job shares them."),
        click.option("--gpus-per-task", help="GPUs per task (worker): Slurm --gpus-per-task, PBS ngpus and LSF "
                     "-gpu num per node (times the node's tasks). The request only."),
        click.option("--gpus-per-node", help="GPUs per node: Slurm --gres=gpu:N, PBS ngpus (Torque gpus), "
                     "LSF -gpu num."),
        click.option("--directive", "directives", multiple=True, help="A line for the batch system that hpcbridge "
                     "has no option for, without its prefix, e.g. '--licenses=fluent:2' (repeatable; added to the "
                     "site profile's). Refused if it sets what an option sets."),
        click.option("--idle-timeout", help="End the cluster after this long with no client connected and no "
                     "task: 30m, 2h, 90s, 600 (seconds); 0 for never. Its runs stay on disk; hpcbridge status says "
                     "why it ended.  [default: 30m]"),
        click.option("--local-directory", help="The workers' scratch and spill folder.  [default: the node's own "
                     "disk: $TMPDIR, else $SLURM_TMPDIR, else /tmp, on each node]"),
        click.option("--worker-class", help="The Dask worker class, e.g. dask_cuda.CUDAWorker (checked at the "
                     "job's start).  [default: Dask's]"),
        click.option("--container", help="Run the scheduler, the workers and the checks in this image (a .sif "
                     "file, an image folder, or a name the runtime knows); your home, the scheduler file's folder, "
                     "the run directory and the workers' scratch are bound in."),
        click.option("--container-runtime", type=click.Choice(CONTAINER_RUNTIMES),
                     help="What runs --container.  [default: the site profile's]"),
        click.option("--container-bind", "container_binds", multiple=True, help="Another folder to bind into the "
                     "container at the same path (repeatable)."),
        click.option("--container-gpu", type=click.Choice(CONTAINER_GPUS), help="With GPUs, apptainer and "
                     "singularity get --nv (nvidia) or --rocm (amd).  [default: nvidia]"),
    ]

    @functools.wraps(command)
    def build_spec(no_profile_modules: bool, **values: Any) -> Any:
        spec_values = {name: values.pop(name) for name in list(values) if name in _SPEC_OPTION_NAMES}
        if getattr(command, "builds_its_spec", False):  # it needs something else first (scale: the cluster's batch system)
            return command(spec_values=spec_values, profile_modules=not no_profile_modules, **values)
        if adaptive:
            _require_batch_system(spec_values.get("scheduler"))
        spec = JobSpec.from_config(spec_values, profile_modules=not no_profile_modules)
        return command(spec=spec, **values)

    for option in reversed(options):
        build_spec = option(build_spec)
    for param in build_spec.__click_params__ if adaptive else ():
        param.hidden = param.name in _NOT_ADAPTIVE  # still parsed, so a value given is refused with the reason
    return build_spec


def _require_batch_system(scheduler: str | None) -> None:
    """An adaptive cluster needs a batch system given or configured: say which to pass, not that local is refused."""
    import dask.config

    if not scheduler and not dask.config.get("hpcbridge.scheduler", None):
        raise SpecError("scheduler", None, "slurm, pbs, lsf or sge: the adaptive cluster submits its worker jobs to a batch "
                        "system (hpcbridge.scheduler in Dask's config sets one for every command)")


_SPEC_OPTION_NAMES = {*spec_fields(), "ntasks"}


_MAIN_EPILOG = """\b
Examples:
  hpcbridge render --scheduler slurm -N 2 --ntasks-per-node 4 --time 2h -o dask.sh
  hpcbridge submit --scheduler slurm -N 2 --ntasks-per-node 4 --interface ib0
  hpcbridge status 4242 && hpcbridge logs 4242 --tail 50
  hpcbridge connect ~/.hpcbridge/jobs/4242/scheduler.json --workers 8
  hpcbridge dashboard 4242       # the ssh tunnel to its dashboard, and the URL
  hpcbridge cancel 4242

\b
Options go after the command: hpcbridge submit --scheduler slurm, not
hpcbridge --scheduler slurm submit. hpcbridge COMMAND --help lists them.
"""


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=_MAIN_EPILOG)
@click.version_option(__version__, "-V", "--version", prog_name="hpcbridge")
def main() -> None:
    """Run a Dask cluster on a Slurm, PBS or LSF batch system (or this machine, or a host list over ssh) and send work to it.

    Every job option left out falls back to the site profile in Dask's config
    (hpcbridge.<scheduler>.<option>, from a YAML file or DASK_HPCBRIDGE__... variables).
    """
    warnings.simplefilter("always", SpecWarning)  # rendering raises them; each is shown as one line
    warnings.showwarning = _show_warning


@main.command(cls=_SpecCommand, epilog=_RENDER_EPILOG)
@spec_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write the script to this file (made executable) instead of printing it.")
def render(spec: JobSpec, output: str | None) -> None:
    """Print the batch script for a job, or write it with -o FILE."""
    from hpcbridge.job.render import render_script, write_script

    if output:
        write_script(spec, output)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(render_script(spec), nl=False)


@main.command(cls=_SpecCommand, epilog=_SUBMIT_EPILOG)
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON, for programs.")
def submit(spec: JobSpec, as_json: bool) -> None:
    """Submit a job; print its id and where its scheduler file will appear."""
    from hpcbridge.job import submit as jobs

    job = jobs.submit(spec)
    if as_json:
        click.echo(json.dumps(job.as_dict()))
    else:
        click.echo(f"job id:         {job.job_id}")
        if job.scheduler_file:
            click.echo(f"scheduler file: {job.scheduler_file}")
            click.echo(f"attach with:    hpcbridge connect {job.scheduler_file}")


_UP_EPILOG = """\b
Examples:
  hpcbridge up --scheduler slurm --adapt 0:20 --ntasks-per-node 4 -c 8 --time 4h
  hpcbridge up --scheduler slurm --adapt 1:6 --max-pending 2 --idle-timeout 15m \\
      --worker-setup "module load gcc/12"
  hpcbridge connect ~/.hpcbridge/jobs/4242/scheduler.json && hpcbridge status 4242
"""


@main.command(cls=_SpecCommand, epilog=_UP_EPILOG)
@spec_options(adaptive=True)
@click.option("--adapt", "adapt_range", required=True, metavar="MIN:MAX",
              help="Between MIN and MAX worker jobs (each one node of --ntasks-per-node workers, with --mem or "
              "--mem-per-cpu), as the work needs.")
@click.option("--max-pending", help="At most this many worker jobs waiting in the queue at once.  [default: no cap]")
@click.option("--adapt-interval", help="How often the cluster decides to add or cancel worker jobs.  [default: 10s]")
@click.option("--wait-count", help="Decisions a worker must stay idle before its job is cancelled.  [default: 6]")
@click.option("--min-job-age", help="No worker job is cancelled younger than this.  [default: 5m]")
@click.option("--failure-limit", help="Stop adding worker jobs after this many fail at start.  [default: 3]")
@click.option("--replace-lead", help="Submit a replacement this long before a worker job's workers drain.  [default: 5m]")
@click.option("--scheduler-walltime", help="The scheduler job's walltime.  [default: --walltime]")
@click.option("--scheduler-mem", help="The scheduler job's memory.  [default: 2G]")
@click.option("--worker-setup", multiple=True, help="A shell command for the worker jobs only, after --setup (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON, for programs.")
def up(spec: JobSpec, adapt_range: str, max_pending: str | None, adapt_interval: str | None,
       wait_count: str | None, min_job_age: str | None, failure_limit: str | None, replace_lead: str | None,
       scheduler_walltime: str | None, scheduler_mem: str | None, worker_setup: tuple[str, ...], as_json: bool) -> None:
    """Start an adaptive cluster: one small job runs the scheduler and submits worker jobs as work comes.

    Attach with hpcbridge connect FILE (or hpcbridge.connect in Python or MATLAB) as to any
    cluster; clients may come and go. It ends on shutdown(), after --idle-timeout without work,
    or on hpcbridge cancel JOB, cancelling its worker jobs; hpcbridge status JOB lists them.
    """
    from hpcbridge.job import adaptive

    minimum, maximum = adaptive.parse_adapt_range(adapt_range)
    given = {"max_pending": max_pending, "idle_timeout": spec.idle_timeout, "interval": adapt_interval,
             "wait_count": wait_count, "min_job_age": min_job_age, "failure_limit": failure_limit,
             "replace_lead": replace_lead, "scheduler_walltime": scheduler_walltime, "scheduler_mem": scheduler_mem}
    settings: dict[str, Any] = {key: value for key, value in given.items() if value is not None}
    for key in ("max_pending", "wait_count", "failure_limit"):
        if key in settings:
            try:
                settings[key] = int(settings[key])
            except ValueError:
                raise SpecError(key, settings[key], "a whole number") from None
    job = adaptive.start(spec, minimum, maximum, worker_setup=worker_setup, **settings)
    if as_json:
        click.echo(json.dumps(job.as_dict()))
    else:
        click.echo(f"job id:         {job.job_id} (scheduler and adaptive logic; {minimum} to {maximum} worker jobs)")
        click.echo(f"scheduler file: {job.scheduler_file}")
        click.echo(f"attach with:    hpcbridge connect {job.scheduler_file}")
        click.echo(f"worker jobs:    hpcbridge status {job.job_id}")


_SCALE_EPILOG = """\b
Examples:
  hpcbridge scale 4242 --add 4 --time 1h
  hpcbridge scale 4242 --add 8 --nodes 2 -c 16 --partition bigmem
  hpcbridge status 4242     # lists the worker jobs that joined
  hpcbridge cancel 4242     # ends them with the cluster

\b
Every option of render is accepted here too; the scheduler file, protocol and
certificates are the cluster's.
"""


def _builds_its_spec(command: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a command that gets the spec options' values (``spec_values``) and builds the spec itself."""
    command.builds_its_spec = True  # type: ignore[attr-defined]
    return command


@main.command(cls=_SpecCommand, epilog=_SCALE_EPILOG)
@click.argument("job_id", metavar="JOB")
@click.option("--add", type=click.IntRange(min=1), required=True,
              help="Workers to add: a job of its own with this many, spread over --nodes.")
@click.option("--json", "as_json", is_flag=True, help="Print the new job as JSON, for programs.")
@spec_options
@_builds_its_spec
def scale(job_id: str, add: int, as_json: bool, spec_values: dict[str, Any], profile_modules: bool) -> None:
    """Add workers to the running cluster JOB: a worker-only job that joins it.

    The job has its own walltime (its workers leave before it), size and options, so the
    workers may differ from the cluster's (more threads, another partition). They join through
    the cluster's scheduler file and certificates, end with the cluster, and hpcbridge cancel
    JOB cancels them too.
    """
    from hpcbridge.job import join

    for name in ("ntasks", "ntasks_per_node"):
        if spec_values.get(name) is not None:
            raise SpecError(name, spec_values[name], "not given with --add, which is the number of workers "
                            "(spread them over nodes with {nodes})")
    try:
        cluster = join.cluster_job(job_id, spec_values.get("scheduler"))
        spec_values = {**spec_values, "scheduler": cluster.scheduler}
        try:
            spec = JobSpec.from_config({**spec_values, "ntasks": add}, profile_modules=profile_modules)
        except SpecError as error:
            if error.field != "ntasks":
                raise
            raise SpecError("add", add, error.allowed) from None
        job = join.join(cluster, spec)
    except join.JoinError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(job.as_dict()))
    else:
        click.echo(f"job id:   {job.job_id} ({spec.workers} worker(s) joining job {cluster.job_id})")
        click.echo(f"status:   hpcbridge status {cluster.job_id}")


def _scheduler_for(job_id: str, scheduler: str | None) -> str:
    """The batch system to ask about ``job_id``: as given, as its record says, by its id's prefix, or as configured.

    With none of these nothing is assumed: a guess (Slurm, once) asked the wrong batch system
    and printed its errors instead of saying that no such job is known.
    """
    if scheduler:
        return scheduler
    if job_id.startswith(("local-", "ssh-")):
        return job_id.split("-", 1)[0]
    import dask.config

    from hpcbridge.job import submit as jobs
    from hpcbridge.backends.job import records_home

    found = jobs.find(job_id)
    if found is not None:
        return found.scheduler
    configured = dask.config.get("hpcbridge.scheduler", None)
    if configured:
        return str(configured)
    raise click.ClickException(
        f"no job {job_id} known: no job of that id was submitted from this account (its record would be in "
        f"{records_home()}); for a job submitted otherwise, name its batch system: --scheduler slurm, pbs, lsf or sge")


_job_scheduler_option = click.option(
    "--scheduler", type=click.Choice(SCHEDULERS), default=None,
    help="The job's batch system.  [default: the one it was submitted to from here (its record says), local or ssh "
         "for local-* or ssh-* ids, else hpcbridge.scheduler in Dask's config]")


@main.command(epilog="\b\nExamples:\n  hpcbridge status 4242\n  hpcbridge status 4242 --scheduler pbs --json\n"
              "  hpcbridge status local-1a2b3c4d")
@click.argument("job_id")
@_job_scheduler_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON, for programs.")
def status(job_id: str, scheduler: str | None, as_json: bool) -> None:
    """Show a job's state, why it waits, and where its output goes."""
    from hpcbridge.job.join import describe_joined, joined_statuses

    from hpcbridge.backends.job import read_job_output

    job = _submitted_job(job_id, scheduler)
    state = get_backend(job.scheduler).status(job_id)
    joined = joined_statuses(job)
    said = read_job_output(state.log) if state.finished else None
    ended = said.ended if said is not None else None
    if as_json:
        click.echo(json.dumps({**state.as_dict(), **({"ended": ended} if ended else {}),
                               **({"joined": [s.as_dict() for s in joined]} if joined else {})}))
        return
    click.echo(f"{state.job_id}: {state.state}" + (f" ({ended})" if ended else ""))
    if state.reason:
        click.echo(f"  reason: {state.reason}")
    if state.exit_code is not None:
        click.echo(f"  exit code: {state.exit_code}")
    if state.log:
        click.echo(f"  log: {state.log}")
    said = _last_job_message(state.log) if state.state == "FAILED" else None
    if said:
        click.echo(f"  the job said: {said}")
    if state.state == "RUNNING":
        for warning in _running_warnings(job_id, scheduler, state):
            click.echo(f"  warning: {warning}")
    from hpcbridge.job.adaptive import describe_status, read_status

    report = read_status(job_id, _scheduler_for(job_id, scheduler))
    if report is not None:
        for line in describe_status(report, live=not state.finished):
            click.echo(line)
    for line in describe_joined(joined):
        click.echo(line)


def _running_warnings(job_id: str, scheduler: str | None, state) -> list[str]:
    """What a running job warned of since it published its scheduler file (that the file is gone, say).

    A job submitted from here whose file is gone is said so also before the job notices (or
    when its output went with the file's folder).
    """
    from pathlib import Path

    from hpcbridge.backends.job import read_job_output
    from hpcbridge.job import submit as jobs

    said = read_job_output(state.log)
    if said is not None and said.warnings:
        return list(said.warnings)
    found = jobs.find(job_id, scheduler)
    if found is None or not found.scheduler_file or Path(found.scheduler_file).exists():
        return []
    if said is not None and said.published:
        return [f"the scheduler file {found.scheduler_file} is gone while the job runs (its folder purged or "
                "deleted?): no new client can attach, and a worker that restarts cannot rejoin"]
    if said is None:
        return [f"neither the scheduler file {found.scheduler_file} nor the job's output {state.log} is there: "
                "the job has not started Dask yet, or its folder was purged"]
    return []


def _last_job_message(log: str | None) -> str | None:
    """The last ``hpcbridge: ...`` line of a job's output: the script's own reason for failing.

    The preflight checks (the Python lacks distributed, an interface is missing, ...) and the
    scheduler start write such a line before the job exits, so ``status`` can say why.
    """
    from pathlib import Path

    try:
        lines = Path(log).read_text(errors="replace").splitlines() if log else []
    except OSError:
        return None
    said = [line for line in lines if line.startswith("hpcbridge: ") and not line.startswith("hpcbridge: waiting")]
    return said[-1][len("hpcbridge: "):] if said else None


@main.command("list", epilog="\b\nExamples:\n  hpcbridge list\n  hpcbridge list --json")
@click.option("--json", "as_json", is_flag=True, help="Print the clusters as JSON, for programs.")
def list_command(as_json: bool) -> None:
    """List my clusters on every batch system this machine submitted to: state, workers, walltime left, core-hours.

    Workers are asked of each running scheduler (briefly; '-' when it does not answer); core-hours
    are the job's cores times the time since its scheduler started. A finished cluster is listed for
    7 days after it ended, with why it ended; then its record is removed (its runs stay on disk).
    """
    from hpcbridge.job.listing import list_clusters, table

    entries = list_clusters()
    if as_json:
        click.echo(json.dumps([entry.as_dict() for entry in entries]))
    elif not entries:
        click.echo("no clusters (none submitted from this account in the last 7 days)")
    else:
        for line in table(entries):
            click.echo(line)


@main.command(epilog="\b\nExamples:\n  hpcbridge logs 4242 --tail 50\n  hpcbridge logs 4242 --follow\n"
              "  hpcbridge logs 4242 --scheduler lsf")
@click.argument("job_id")
@_job_scheduler_option
@click.option("--tail", "lines", type=click.IntRange(min=1), default=None, help="Only the last N lines.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing what the job writes, as tail -f does, until the "
              "job ends (Ctrl-C stops following; the job runs on).")
def logs(job_id: str, scheduler: str | None, lines: int | None, follow: bool) -> None:
    """Print a job's output (the scheduler's and workers' messages)."""
    from hpcbridge.job.follow import follow_output, output_path

    job = _submitted_job(job_id, scheduler)
    path = output_path(job)
    if not follow:
        if path is None or not path.exists():
            raise click.ClickException(f"no output for job {job_id} yet{f' at {path}' if path else ''}")
        text = path.read_text(errors="replace").splitlines(keepends=True)
        click.echo("".join(text[-lines:] if lines else text), nl=False)
        return
    try:
        for chunk in follow_output(job, lines):
            click.echo(chunk, nl=False)
    except KeyboardInterrupt:
        sys.exit(130)  # stopped following: quietly, as tail -f
    state = job.status()
    click.echo(f"hpcbridge: job {job_id} ended: {state.state}", err=True)


@main.command(epilog="\b\nExamples:\n  hpcbridge cancel 4242\n  hpcbridge cancel 4242 --scheduler pbs")
@click.argument("job_id")
@_job_scheduler_option
def cancel(job_id: str, scheduler: str | None) -> None:
    """Cancel a job, ending its Dask cluster; its scheduler file and certificates are removed, and the
    worker jobs that joined it (hpcbridge scale) are cancelled too.

    A job that has already ended is left as it is and said so (exit status 0).
    """
    job = _submitted_job(job_id, scheduler)
    joined = [worker_job.job_id for worker_job in job.joined()]
    ended = job.cancel()
    if joined:
        click.echo(f"cancelled the worker jobs that joined it: {', '.join(joined)} (those still running)")
    if ended is None:
        click.echo(f"cancelled {job_id}")
    else:
        reason = f" ({ended.reason})" if ended.reason else ""
        click.echo(f"job {job_id} had already ended: {ended.state}{reason}; nothing to cancel")


def _submitted_job(job_id: str, scheduler: str | None):
    """The job as submitted from here (with its scheduler file), or as the batch system knows it."""
    from hpcbridge.job import submit as jobs

    found = jobs.find(job_id, scheduler)
    if found is not None:
        return found
    return jobs.SubmittedJob(job_id, _scheduler_for(job_id, scheduler), jobs.default_scheduler_file(job_id))


@main.command(epilog="\b\nExamples:\n  hpcbridge connect ~/.hpcbridge/jobs/4242/scheduler.json --workers 8\n"
              "  hpcbridge connect 4242 --timeout 30")
@click.argument("target")
@_job_scheduler_option
@click.option("--workers", "n_workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Wait until this many workers have joined.")
@click.option("--timeout", type=click.FloatRange(min=0), default=300, show_default=True,
              help="Seconds to wait for the file, the scheduler and the workers.")
def connect(target: str, scheduler: str | None, n_workers: int, timeout: float) -> None:
    """Attach to a cluster and describe it; TARGET is its scheduler file or its job id.

    Given a job id, the scheduler file is the one that job was submitted with (or the default
    ~/.hpcbridge/jobs/JOB/scheduler.json), and a file written by another job is refused.
    """
    from pathlib import Path

    from hpcbridge.client.bridge import connect as attach

    if "/" in target or target.endswith(".json") or Path(target).expanduser().is_file():
        bridge = attach(target, n_workers=n_workers, timeout=timeout)
    else:
        bridge = attach(n_workers=n_workers, timeout=timeout, job=_submitted_job(target, scheduler))
    with bridge:
        click.echo(f"scheduler: {bridge.client.scheduler.address}")
        if bridge.job is not None:
            click.echo(f"job:       {bridge.job.job_id} ({bridge.job.scheduler})")
        click.echo(f"workers:   {bridge.n_workers} ({bridge.total_threads} threads)")
        click.echo(f"dashboard: {bridge.dashboard_link}")


@main.command(epilog="\b\nExamples:\n  hpcbridge dashboard 4242\n  hpcbridge dashboard 4242 --login-host cluster.example.org\n"
              "  hpcbridge dashboard ~/.hpcbridge/jobs/4242/scheduler.json --local-port 8787")
@click.argument("target")
@_job_scheduler_option
@click.option("--local-port", type=click.IntRange(min=1, max=65535), default=None,
              help="The port on your computer.  [default: the dashboard's own port]")
@click.option("--login-host", default=None, metavar="HOST",
              help="The host your computer reaches the cluster through, for ssh -J; '' for none.  "
                   "[default: this machine's name]")
@click.option("--json", "as_json", is_flag=True, help="Print the URL and the tunnel as JSON, for programs.")
def dashboard(target: str, scheduler: str | None, local_port: int | None, login_host: str | None,
              as_json: bool) -> None:
    """Say how to open a cluster's dashboard: the ssh tunnel to run on your computer, and the URL.

    Dask's dashboard is plain HTTP without a login, so a job's dashboard listens on 127.0.0.1 of
    the scheduler's node (unless the job was given --dashboard-address) and lets in only a browser
    that brings the job's token (the URL carries it); ssh, which knows who you are, brings it to
    your computer. TARGET is the job id or its scheduler file.
    """
    from pathlib import Path

    from hpcbridge import scheduler_file as cluster_files
    from hpcbridge.client.dashboard import access

    if login_host is not None and login_host and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@:%-]{0,252}", login_host):
        raise click.BadParameter(f"{login_host!r} is not allowed; expected a host name or address such as "
                                 "login1.example.org (or '' for none)", param_hint="--login-host")
    if "/" in target or target.endswith(".json") or Path(target).expanduser().is_file():
        path, job = Path(target).expanduser(), None
    else:
        job = _submitted_job(target, scheduler)
        path = Path(job.scheduler_file)
    try:
        info = cluster_files.read(path)
    except FileNotFoundError:
        state = f": job {job.job_id} is {job.status().state}" if job is not None else ""
        raise click.ClickException(f"no scheduler file at {path}{state} (the dashboard starts with the cluster)") \
            from None
    except cluster_files.SchedulerFileError as error:
        raise click.ClickException(str(error)) from None
    try:
        reach = access(info, local_port=local_port, login_host=login_host)
    except LookupError as error:
        raise click.ClickException(str(error)) from None
    if as_json:
        click.echo(json.dumps(reach.as_dict()))
        return
    name = f"job {info.job_id}" if info.job_id else str(path)
    if reach.tunnel is None:
        click.echo(f"{name}'s dashboard listens on {reach.host or 'every interface'} of {reach.node or 'its node'}, "
                   f"port {reach.port}: its pages and token cross the network unencrypted")
        click.echo(f"open:    {reach.url}")
        return
    click.echo(f"{name}'s dashboard listens on {reach.node or 'this machine'} at {reach.host}:{reach.port}, for "
               "its owner alone (the URL carries the job's token); ssh brings it to your computer")
    if reach.here:
        click.echo(f"here:    {reach.here}")
    click.echo(f"tunnel:  {reach.tunnel_text}    (run it on your computer; Ctrl-C ends it)")
    click.echo(f"open:    {reach.url}")


@main.command("tls-certificates", epilog="\b\nExamples:\n  hpcbridge tls-certificates\n"
              "  hpcbridge tls-certificates ~/tls --days 30\n"
              "  eval \"$(hpcbridge tls-certificates ~/tls | tail -n +2)\"   # and set the client's variables")
@click.argument("folder", type=click.Path(file_okay=False), default="~/.hpcbridge/tls")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True, help="How long they are valid.")
@click.option("--force", is_flag=True, help="Replace certificates already in FOLDER (clusters and clients that use "
              "them are locked out).")
def tls_certificates(folder: str, days: int, force: bool) -> None:
    """Create a private CA and a certificate for --protocol tls in FOLDER.  [default: ~/.hpcbridge/tls]

    Prints the job options on the first line and, after it, the variables a client sets to
    present the certificates (a plain Dask client, or hpcbridge when the scheduler file does
    not say where they are). An existing set is kept unless --force.
    """
    import shlex

    from hpcbridge.tls import certificates_in, create_certificates

    existing = certificates_in(folder)
    present = [str(path) for path in (existing.ca_file, existing.cert, existing.key) if path.exists()]
    if present and not force:
        raise click.ClickException(f"{folder} already holds certificates ({', '.join(present)}); clusters and "
                                   "clients may trust them: --force replaces them, or choose another FOLDER")
    made = create_certificates(folder, days=days)
    if present:
        warn(f"replaced the certificates in {folder}: clusters and clients that use the old ones are locked out")
    click.echo(f"--protocol tls --tls-ca-file {made.ca_file} --tls-cert {made.cert} --tls-key {made.key}")
    for variable, value in made.client_environment().items():
        click.echo(f"export {variable}={shlex.quote(value)}")


@main.command("matlab-path", epilog="\b\nExamples:\n  hpcbridge matlab-path\n"
              "  hpcbridge matlab-path --copy-to ~/matlab/hpcbridge\n"
              "  matlab -batch \"addpath('$(hpcbridge matlab-path)'); c = hpcbridge.connect(...)\"")
@click.option("--copy-to", type=click.Path(file_okay=False), default=None, metavar="FOLDER",
              help="Copy the toolbox into FOLDER (created; it must not exist yet) and print FOLDER instead.")
def matlab_path(copy_to: str | None) -> None:
    """Print the folder of hpcbridge's MATLAB toolbox, for MATLAB's addpath.

    The toolbox (the +hpcbridge package and its examples) is installed with hpcbridge; with a
    clone it is the clone's matlab/ folder.
    """
    import shutil
    from pathlib import Path

    from hpcbridge.client.matlab_toolbox import toolbox_folder

    folder = toolbox_folder()
    if copy_to is not None:
        target = Path(copy_to).expanduser()
        if target.exists():
            raise click.BadParameter(f"{copy_to!r} exists already; expected a new folder (nothing is overwritten)",
                                     param_hint="--copy-to")
        shutil.copytree(folder, target)
        folder = target.resolve()
    click.echo(str(folder))


@main.command(epilog="\b\nExamples:\n  hpcbridge demo\n  hpcbridge demo --upper 10000000 --workers 2")
@click.option("--upper", type=click.IntRange(min=3), default=1_000_000, show_default=True,
              help="Sum the distinct prime factors of every integer in [2, UPPER).")
@click.option("--workers", type=click.IntRange(min=1, max=256), default=2, show_default=True,
              help="Local Dask workers (one thread each).")
@click.option("--timeout", type=click.FloatRange(min=1), default=120, show_default=True,
              help="Seconds to wait for the cluster to start.")
def demo(upper: int, workers: int, timeout: float) -> None:
    """Start a local cluster as a job, attach through its scheduler file, and compute."""
    from hpcbridge.workloads.demo import run_demo

    click.echo(f"hpcbridge demo: the sum of the distinct prime factors of every integer in [2, {upper:,})")
    result = run_demo(upper, workers, timeout=timeout, say=lambda line: click.echo(f"  {line}"))
    click.echo(f"  sum:     {result.total}")
    click.echo(f"  workers: {result.workers}")
    click.echo(f"  time:    {result.compute_seconds:.2f} s computing, {result.total_seconds:.2f} s in all")


if __name__ == "__main__":
    sys.exit(main())
