"""The ``hpcbridge`` command: thin click commands over spec → render → submit → connect.

Every failure a user can cause (a bad option value, a batch command that refuses, a job that
does not exist, a cluster that does not answer) ends as one ``Error:`` line and a non-zero exit
code, never a traceback.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from hpcbridge import __version__
from hpcbridge.backends import BatchCommandError, JobNotFound, get_backend
from hpcbridge.spec import MODES, PBS_FLAVORS, PROTOCOLS, SCHEDULERS, JobSpec, SpecError, spec_fields


class _Group(click.Group):
    """Turn the errors users cause into one-line messages instead of tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        from hpcbridge.bridge import ConnectError
        from hpcbridge.render import RenderError

        try:
            return super().invoke(ctx)
        except SpecError as error:
            option = "--" + error.field.replace("_", "-")
            raise click.UsageError(f"invalid value for {option}: {error.value!r}; expected {error.allowed}") from None
        except (BatchCommandError, JobNotFound, ConnectError, RenderError, OSError) as error:
            raise click.ClickException(str(error)) from None


def spec_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that describe a job, shared by ``render`` and ``submit``; they build a spec."""
    options = [
        click.option("--scheduler", type=click.Choice(SCHEDULERS),
                     help="The batch system the script is for.  [default: hpcbridge.scheduler in Dask's config, "
                     "else local]"),
        click.option("--mode", type=click.Choice(MODES),
                     help="scheduler-file: a scheduler and separately started workers; mpi: one MPI program "
                     "(dask-mpi); array: independent elements, no cluster.  [default: scheduler-file]"),
        click.option("--nodes", help="Nodes to allocate.  [default: 1]"),
        click.option("--ntasks-per-node", help="Dask workers per node.  [default: 1]"),
        click.option("--cpus-per-task", help="CPUs (and threads) per worker.  [default: 1]"),
        click.option("--mem-per-cpu", help="Memory per CPU, e.g. 4G (Slurm's M, G are MiB, GiB)."),
        click.option("--mem", help="Memory per node, e.g. 64G."),
        click.option("--walltime", help="Wall time: HH:MM:SS, D-HH:MM:SS, 90m, 2h or minutes."),
        click.option("--account", help="Account (project) to charge."),
        click.option("--queue", "--partition", "queue", help="Queue or partition."),
        click.option("--job-name", help="The job's name.  [default: hpcbridge]"),
        click.option("--interface", help="Network interface for the workers, e.g. ib0 for InfiniBand."),
        click.option("--scheduler-interface", help="Network interface the scheduler listens on, if clients "
                     "cannot reach the workers' one.  [default: --interface]"),
        click.option("--protocol", type=click.Choice(PROTOCOLS), help="Dask's communication protocol.  [default: tcp]"),
        click.option("--tls-ca-file", help="With --protocol tls: the CA certificate (PEM)."),
        click.option("--tls-cert", help="With --protocol tls: the certificate the cluster presents (PEM)."),
        click.option("--tls-key", help="With --protocol tls: the certificate's private key (PEM)."),
        click.option("--scheduler-file", help="Where the job writes the scheduler's address; "
                     "{job_id} is replaced by the job id.  [default: ~/.hpcbridge/jobs/{job_id}/scheduler.json]"),
        click.option("--module", "modules", multiple=True, help="Environment module to load (repeatable)."),
        click.option("--setup", multiple=True, help="Shell command to run before Dask starts (repeatable)."),
        click.option("--python", help="Python interpreter on the compute nodes; it needs distributed.  "
                     "[default: the Python running hpcbridge]"),
        click.option("--client-script", help="With --mode mpi: a Python script that MPI rank 1 runs as the client "
                     "(the cluster ends when it returns); with --mode array: the script each element runs."),
        click.option("--client-arg", "client_args", multiple=True, help="An argument for the client script (repeatable)."),
        click.option("--array", help="With --mode array: the elements' indices, e.g. 1-100 or 0-99:2."),
        click.option("--array-throttle", help="With --mode array: at most this many elements run at once."),
        click.option("--pbs-flavor", type=click.Choice(PBS_FLAVORS), default=None,
                     help="PBS resource syntax: select=... (pbspro, also OpenPBS) or nodes=...:ppn=... (torque).  "
                     "[default: pbspro]"),
        click.option("--lifetime-margin", help="Workers retire this long before the walltime, e.g. 5m.  [default: 5m]"),
        click.option("--run-directory", help="Where finished chunks of every map are saved, so results outlive "
                     "the job.  [default: runs/ beside the scheduler files]"),
        click.option("--no-save-runs", "save_runs", flag_value=False, default=None,
                     help="Do not save finished chunks to disk (results live only in the cluster's memory)."),
        click.option("--requeue", is_flag=True, default=None,
                     help="Slurm: shortly before the walltime (or when preempted) the job goes back in the queue "
                     "and its cluster starts again, writing a new scheduler file; runs resume from disk."),
    ]

    @functools.wraps(command)
    def build_spec(**values: Any) -> Any:
        spec_values = {name: values.pop(name) for name in list(values) if name in _SPEC_OPTION_NAMES}
        return command(spec=JobSpec.from_config(spec_values), **values)

    for option in reversed(options):
        build_spec = option(build_spec)
    return build_spec


_SPEC_OPTION_NAMES = set(spec_fields())


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpcbridge")
def main() -> None:
    """Run a Dask cluster on a Slurm, PBS or LSF batch system (or this machine) and send work to it.

    Every job option left out falls back to the site profile in Dask's config
    (hpcbridge.<scheduler>.<option>, from a YAML file or DASK_HPCBRIDGE__... variables).
    """


@main.command()
@spec_options
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write the script to this file (made executable) instead of printing it.")
def render(spec: JobSpec, output: str | None) -> None:
    """Print the batch script for a job, or write it with -o FILE."""
    from hpcbridge.render import render_script, write_script

    if output:
        write_script(spec, output)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(render_script(spec), nl=False)


@main.command()
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON, for programs.")
def submit(spec: JobSpec, as_json: bool) -> None:
    """Submit a job; print its id and where its scheduler file will appear."""
    from hpcbridge import jobs

    job = jobs.submit(spec)
    if as_json:
        click.echo(json.dumps(job.as_dict()))
    else:
        click.echo(f"job id:         {job.job_id}")
        if job.scheduler_file:
            click.echo(f"scheduler file: {job.scheduler_file}")
            click.echo(f"attach with:    hpcbridge connect {job.scheduler_file}")


@main.command()
@spec_options
@click.option("--adapt", "adapt_range", required=True, metavar="MIN:MAX",
              help="Between MIN and MAX worker jobs (each one node of --ntasks-per-node workers), as the work needs.")
@click.option("--max-pending", help="At most this many worker jobs waiting in the queue at once.  [default: no cap]")
@click.option("--idle-timeout", help="End the cluster after this long without tasks, e.g. 30m.  [default: 30m]")
@click.option("--adapt-interval", help="How often the cluster decides to add or cancel worker jobs.  [default: 10s]")
@click.option("--wait-count", help="Decisions a worker must stay idle before its job is cancelled.  [default: 6]")
@click.option("--min-job-age", help="No worker job is cancelled younger than this.  [default: 5m]")
@click.option("--failure-limit", help="Stop adding worker jobs after this many fail at start.  [default: 3]")
@click.option("--replace-lead", help="Submit a replacement this long before a worker job's workers drain.  [default: 5m]")
@click.option("--scheduler-walltime", help="The scheduler job's walltime.  [default: --walltime]")
@click.option("--scheduler-mem", help="The scheduler job's memory.  [default: 2G]")
@click.option("--worker-setup", multiple=True, help="A shell command for the worker jobs only, after --setup (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the job as JSON, for programs.")
def up(spec: JobSpec, adapt_range: str, max_pending: str | None, idle_timeout: str | None, adapt_interval: str | None,
       wait_count: str | None, min_job_age: str | None, failure_limit: str | None, replace_lead: str | None,
       scheduler_walltime: str | None, scheduler_mem: str | None, worker_setup: tuple[str, ...], as_json: bool) -> None:
    """Start an adaptive cluster: one small job runs the scheduler and submits worker jobs as work comes.

    Attach with hpcbridge connect FILE (or hpcbridge.connect in Python or MATLAB) as to any
    cluster; clients may come and go. It ends on shutdown(), after --idle-timeout without work,
    or on hpcbridge cancel JOB, cancelling its worker jobs; hpcbridge status JOB lists them.
    """
    from hpcbridge import adaptive

    minimum, maximum = adaptive.parse_adapt_range(adapt_range)
    given = {"max_pending": max_pending, "idle_timeout": idle_timeout, "interval": adapt_interval,
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


def _scheduler_for(job_id: str, scheduler: str | None) -> str:
    if scheduler:
        return scheduler
    if job_id.startswith("local-"):
        return "local"
    import dask.config

    return dask.config.get("hpcbridge.scheduler", None) or "slurm"


_job_scheduler_option = click.option(
    "--scheduler", type=click.Choice(SCHEDULERS), default=None,
    help="The job's batch system.  [default: local for local-* ids, else hpcbridge.scheduler in Dask's config, "
         "else slurm]")


@main.command()
@click.argument("job_id")
@_job_scheduler_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON, for programs.")
def status(job_id: str, scheduler: str | None, as_json: bool) -> None:
    """Show a job's state, why it waits, and where its output goes."""
    state = get_backend(_scheduler_for(job_id, scheduler)).status(job_id)
    if as_json:
        click.echo(json.dumps(state.as_dict()))
        return
    click.echo(f"{state.job_id}: {state.state}")
    if state.reason:
        click.echo(f"  reason: {state.reason}")
    if state.exit_code is not None:
        click.echo(f"  exit code: {state.exit_code}")
    if state.log:
        click.echo(f"  log: {state.log}")
    said = _last_job_message(state.log) if state.state == "FAILED" else None
    if said:
        click.echo(f"  the job said: {said}")
    from hpcbridge.adaptive import describe_status, read_status

    report = read_status(job_id, _scheduler_for(job_id, scheduler))
    if report is not None:
        for line in describe_status(report, live=not state.finished):
            click.echo(line)


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


@main.command()
@click.argument("job_id")
@_job_scheduler_option
@click.option("--tail", "lines", type=click.IntRange(min=1), default=None, help="Only the last N lines.")
def logs(job_id: str, scheduler: str | None, lines: int | None) -> None:
    """Print a job's output (the scheduler's and workers' messages)."""
    path = get_backend(_scheduler_for(job_id, scheduler)).log_path(job_id)
    if path is None or not path.exists():
        raise click.ClickException(f"no output for job {job_id} yet{f' at {path}' if path else ''}")
    text = path.read_text(errors="replace").splitlines(keepends=True)
    click.echo("".join(text[-lines:] if lines else text), nl=False)


@main.command()
@click.argument("job_id")
@_job_scheduler_option
def cancel(job_id: str, scheduler: str | None) -> None:
    """Cancel a job, ending its Dask cluster."""
    get_backend(_scheduler_for(job_id, scheduler)).cancel(job_id)
    click.echo(f"cancelled {job_id}")


@main.command()
@click.argument("scheduler_file", type=click.Path(dir_okay=False))
@click.option("--workers", "n_workers", type=click.IntRange(min=0), default=1, show_default=True,
              help="Wait until this many workers have joined.")
@click.option("--timeout", type=click.FloatRange(min=0), default=300, show_default=True,
              help="Seconds to wait for the file, the scheduler and the workers.")
def connect(scheduler_file: str, n_workers: int, timeout: float) -> None:
    """Attach to a cluster through its scheduler file and describe it."""
    from hpcbridge.bridge import connect as attach

    with attach(scheduler_file, n_workers=n_workers, timeout=timeout) as bridge:
        click.echo(f"scheduler: {bridge.client.scheduler.address}")
        click.echo(f"workers:   {bridge.n_workers} ({bridge.total_threads} threads)")
        click.echo(f"dashboard: {bridge.dashboard_link}")


@main.command("tls-certificates")
@click.argument("folder", type=click.Path(file_okay=False), default="~/.hpcbridge/tls")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True, help="How long they are valid.")
def tls_certificates(folder: str, days: int) -> None:
    """Create a private CA and a certificate for --protocol tls in FOLDER.  [default: ~/.hpcbridge/tls]"""
    from hpcbridge.tls import create_certificates

    made = create_certificates(folder, days=days)
    click.echo(f"--protocol tls --tls-ca-file {made.ca_file} --tls-cert {made.cert} --tls-key {made.key}")


@main.command()
@click.option("--upper", type=click.IntRange(min=3), default=1_000_000, show_default=True,
              help="Sum the distinct prime factors of every integer in [2, UPPER).")
@click.option("--workers", type=click.IntRange(min=1, max=256), default=2, show_default=True,
              help="Local Dask workers (one thread each).")
@click.option("--timeout", type=click.FloatRange(min=1), default=120, show_default=True,
              help="Seconds to wait for the cluster to start.")
def demo(upper: int, workers: int, timeout: float) -> None:
    """Start a local cluster as a job, attach through its scheduler file, and compute."""
    from hpcbridge.demo import run_demo

    click.echo(f"hpcbridge demo: the sum of the distinct prime factors of every integer in [2, {upper:,})")
    result = run_demo(upper, workers, timeout=timeout, say=lambda line: click.echo(f"  {line}"))
    click.echo(f"  sum:     {result.total}")
    click.echo(f"  workers: {result.workers}")
    click.echo(f"  time:    {result.compute_seconds:.2f} s computing, {result.total_seconds:.2f} s in all")


if __name__ == "__main__":
    sys.exit(main())
