"""Workers for a running cluster: a worker-only job that joins it through its scheduler file.

``hpcbridge scale JOB --add N`` (and :func:`join` from Python) submits a job of its own that runs
no scheduler: its workers read the cluster's scheduler file and present the cluster's
certificates, as the cluster's own workers do. Being a job of its own, it has its own size,
walltime (its workers drain before it, :mod:`hpcbridge.cluster.drain`), partition, threads and
software: workers of another kind beside the cluster's. The script is the batch system's
scheduler-file job without the scheduler (``templates/<scheduler>/join.sh.j2``), so every job
option renders as it does for a cluster.

Why a function of its own rather than an option of :func:`~hpcbridge.job.submit.submit`: a
join has its own preconditions (a cluster that runs, its scheduler file, its certificates), its
own template, and its record goes beside the cluster's rather than making a new cluster; the
submit of a cluster stays one concept.

Why not the adaptive cluster's worker jobs: those are dask-jobqueue's scripts, written inside
the scheduler job, one node each, with the certificates inherited from that job's environment.
A join is submitted from the login node and may span nodes; hpcbridge's own templates give it
the allocation, worker preflight, memory split and certificates the cluster's workers have.

Every worker job that joined is recorded beside the cluster's record
(:meth:`~hpcbridge.backends.job.SubmittedJob.joined`): ``hpcbridge status JOB`` lists them and
``hpcbridge cancel JOB`` ends them with the cluster.
"""

from __future__ import annotations

import dataclasses
import os
import stat

from hpcbridge import scheduler_file as files
from hpcbridge.backends import get_backend
from hpcbridge.backends.base import JobStatus, statuses
from hpcbridge.backends.job import SubmittedJob
from hpcbridge.job.spec import JobSpec, SpecError
from hpcbridge.job.submit import default_scheduler_file, find

JOIN_SCHEDULERS = ("slurm", "pbs", "lsf", "sge", "local")


class JoinError(ValueError):
    """The cluster cannot be joined (unknown, not running, no scheduler file, unusable certificates); one line."""


def cluster_job(job_id: str, scheduler: str | None = None) -> SubmittedJob:
    """The cluster ``job_id`` as submitted from this account, else as its batch system knows it
    with the default scheduler file; :class:`JoinError` when it does not run (or is unknown)."""
    job = find(job_id, scheduler)
    if job is None:
        job = SubmittedJob(job_id, scheduler or _default_scheduler(job_id), default_scheduler_file(job_id))
    check_running(job)
    return job


def check_running(job: SubmittedJob) -> None:
    """:class:`JoinError` unless ``job`` runs now (a pending cluster has no scheduler to join yet)."""
    running = job.status()
    if running.state == "UNKNOWN":
        raise JoinError(f"job {job.job_id}: unknown to {job.scheduler} ({running.reason or 'no such job'}); "
                        "give the job id of a running cluster (and --scheduler if it is not "
                        f"{job.scheduler})")
    if running.state != "RUNNING":
        why = f": {running.reason}" if running.reason else ""
        hint = "; add workers once it runs" if running.state == "PENDING" else ""
        raise JoinError(f"job {job.job_id} is not running ({running.state}{why}){hint}")


def _default_scheduler(job_id: str) -> str:
    if job_id.startswith(("local-", "ssh-")):
        return job_id.split("-", 1)[0]
    import dask.config

    return dask.config.get("hpcbridge.scheduler", None) or "slurm"


def join_spec(cluster: SubmittedJob, spec: JobSpec) -> JobSpec:
    """``spec`` made to join ``cluster``: its scheduler file, its protocol and (unless ``spec``
    names its own) its certificates. Refuses what cannot join, naming the field or the file."""
    if spec.scheduler not in JOIN_SCHEDULERS:
        raise SpecError("scheduler", spec.scheduler, "slurm, pbs, lsf, sge or local for workers that join a cluster")
    if spec.scheduler != cluster.scheduler:
        raise SpecError("scheduler", spec.scheduler, f"{cluster.scheduler}, the batch system of job {cluster.job_id} "
                        "(the workers join it from its own batch system)")
    if spec.mode != "scheduler-file":
        raise SpecError("mode", spec.mode, "scheduler-file for workers that join a cluster")
    if spec.requeue:
        raise SpecError("requeue", spec.requeue, "false for workers that join a cluster (they end with it)")
    info = cluster_file(cluster)
    protocol = info.address.split("://", 1)[0] if "://" in info.address else "tcp"
    if protocol not in ("tls", "tcp", "ucx"):
        raise JoinError(f"job {cluster.job_id}'s scheduler listens on {info.address}: hpcbridge joins tls, tcp "
                        "or ucx clusters")
    changes: dict[str, object] = {"scheduler_file": str(info.path), "protocol": protocol, "requeue": False}
    own = spec.tls_ca_file is not None and spec.protocol == "tls"
    if protocol == "tls":
        certificates = ((spec.tls_ca_file, spec.tls_cert, spec.tls_key) if own else
                        _cluster_certificates(cluster, info))
        for path in certificates:
            _check_certificate_file(cluster, str(path))
        changes.update(zip(("tls_ca_file", "tls_cert", "tls_key"), map(str, certificates)))
    else:
        changes.update(tls_ca_file=None, tls_cert=None, tls_key=None)
    return dataclasses.replace(spec, **changes)


def cluster_file(cluster: SubmittedJob) -> files.ClusterInfo:
    """The running cluster's scheduler file; :class:`JoinError` when it has none (yet) or it is another job's."""
    if not cluster.scheduler_file:
        raise JoinError(f"job {cluster.job_id} has no scheduler file (a job array runs no Dask cluster): "
                        "nothing to join")
    try:
        info = files.read(cluster.scheduler_file)
    except FileNotFoundError:
        raise JoinError(f"job {cluster.job_id} has no scheduler file at {cluster.scheduler_file} (its Dask "
                        "scheduler has not started yet, or the file was removed): nothing to join") from None
    except files.SchedulerFileError as error:
        raise JoinError(str(error)) from None
    if info.job_id is not None and info.job_id != str(cluster.job_id):
        raise JoinError(f"the scheduler file {info.path} belongs to {info.job_label()}, not job {cluster.job_id}")
    return info


def _cluster_certificates(cluster: SubmittedJob, info: files.ClusterInfo) -> tuple[str, str, str]:
    if info.certificates is None:
        raise JoinError(f"job {cluster.job_id}'s cluster runs TLS but its scheduler file {info.path} names no "
                        "certificates: give the cluster's with --tls-ca-file, --tls-cert and --tls-key")
    return str(info.certificates.ca_file), str(info.certificates.cert), str(info.certificates.key)


def _check_certificate_file(cluster: SubmittedJob, path: str) -> None:
    """A certificate the workers will present must be there and be its owner's alone (never a weaker copy)."""
    target = os.path.expanduser(path)
    try:
        info = os.stat(target)
    except FileNotFoundError:
        raise JoinError(f"the certificate {path} is missing: workers without it cannot join job "
                        f"{cluster.job_id}'s cluster (TLS refuses them)") from None
    except OSError as error:
        raise JoinError(f"the certificate {path}: {error.strerror or error}") from None
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise JoinError(f"the certificate {path} is mode {stat.S_IMODE(info.st_mode):04o} (uid {info.st_uid}): "
                        "the cluster's certificates must be yours alone (chmod 600); not starting workers with it")


def render_join_script(cluster: SubmittedJob, spec: JobSpec) -> str:
    """The worker-only job's script for ``spec`` (already made by :func:`join_spec`): ``<scheduler>/join.sh.j2``."""
    from hpcbridge.job.render import render_named

    return render_named(f"{spec.scheduler}/join.sh.j2", spec, cluster_job=cluster.job_id)


def join(cluster: SubmittedJob | str, spec: JobSpec) -> SubmittedJob:
    """Submit a job of ``spec``'s workers that join the running ``cluster`` (a job, or its id as recorded here).

    ``spec`` sizes the new job (``spec.workers`` workers: ``nodes`` x ``ntasks_per_node``) and
    sets its walltime, queue, threads, memory and software; the scheduler file, protocol and
    certificates are the cluster's (``spec``'s own TLS files when it names them). Nothing is
    submitted when the cluster does not run or cannot be joined (:class:`JoinError`, or
    :class:`~hpcbridge.job.spec.SpecError` for an option). The job is recorded beside the
    cluster's, so that cancelling the cluster cancels it too.
    """
    if isinstance(cluster, str):
        cluster = cluster_job(cluster, spec.scheduler)
    else:
        check_running(cluster)
    joining = join_spec(cluster, spec)
    script = render_join_script(cluster, joining)
    job_id = get_backend(joining.scheduler).submit(script)
    job = SubmittedJob(job_id=job_id, scheduler=joining.scheduler, scheduler_file=None, joins=cluster.job_id)
    job.record()
    return job


def joined_statuses(cluster: SubmittedJob) -> list[JobStatus]:
    """The states of the worker jobs that joined ``cluster``, oldest first (one question to the batch system)."""
    jobs = cluster.joined()
    if not jobs:
        return []
    found = statuses(get_backend(cluster.scheduler), [job.job_id for job in jobs])
    return [found.get(job.job_id, JobStatus(job.job_id, "UNKNOWN", reason="its batch system did not answer"))
            for job in jobs]


def describe_joined(found: list[JobStatus]) -> list[str]:
    """Lines for ``hpcbridge status``: the worker jobs that joined a cluster, with their states."""
    if not found:
        return []
    entries = [f"{status.job_id} ({status.state}{f': {status.reason}' if status.reason else ''})" for status in found]
    return [f"  worker jobs joined: {', '.join(entries)}"]
