"""Reaching a cluster through its scheduler file: the file, the certificates, a scheduler that answers.

The scheduler file is the only thing a client needs: the job writes it when the scheduler is up.
:func:`wait_for_scheduler_file` waits for it with a deadline of its own, because
``distributed.Client(scheduler_file=<missing file>, timeout=...)`` waits forever for a file that
is not there (distributed 2026.8), which is exactly the case while a job is still queued.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hpcbridge import scheduler_file as cluster_files
from hpcbridge.addresses import address_answers
from hpcbridge.backends import BatchCommandError, JobStatus
from hpcbridge.backends.job import SubmittedJob, read_job_output
from hpcbridge.scheduler_file import ClusterInfo
from hpcbridge.tls import Certificates, TLSRefused, check_handshake

POLL_SECONDS = 0.2


_INVALID_GRACE_SECONDS = 2.0  # a file a plain Dask scheduler is still writing is invalid for a moment


PROBE_SECONDS = 5.0


FOLLOW_GRACE_SECONDS = 15.0


class ConnectError(TimeoutError):
    """The cluster behind a scheduler file could not be reached in time; says what was waited for."""


def wait_for_scheduler_file(path: str | os.PathLike[str], timeout: float,
                            job: SubmittedJob | None = None) -> ClusterInfo:
    """Wait until ``path`` holds a complete scheduler file; return what it says.

    Given the ``job`` that will write the file, stop waiting as soon as that job has ended, and
    refuse a file that another job still running wrote (a stale file of an ended job is waited
    past: the job replaces it when it starts). A file that cannot be read, or stays invalid
    JSON, is reported as such at once.
    """
    from hpcbridge.backends.job import SubmittedJob

    path = Path(path).expanduser()
    deadline = time.monotonic() + timeout
    next_status = time.monotonic() + 1.0
    invalid_since: float | None = None
    stale: str | None = None
    gone_since: float | None = None
    last_status: JobStatus | None = None
    while True:
        try:
            info = cluster_files.read(path)
            invalid_since = None
            if job is None or not info.describes_job or (info.job_id, info.scheduler) == (job.job_id, job.scheduler):
                return info
            try:
                running, status = SubmittedJob(info.job_id, info.scheduler, str(path)).alive()
            except (BatchCommandError, ValueError) as error:
                raise ConnectError(f"{path} was written by {info.job_label()}, not by job {job.job_id} "
                                   f"({job.scheduler}), and that job's state cannot be checked ({error})") from None
            if running:
                raise ConnectError(
                    f"{path} was written by {info.job_label()}, which is still {status.state}, not by job "
                    f"{job.job_id} ({job.scheduler}): two clusters share one scheduler file path; refusing to "
                    "attach to the wrong one (give each job its own file, e.g. with {job_id} in the path)")
            stale = f"{info.job_label()}, which has ended ({status.state})"
        except FileNotFoundError:
            invalid_since = None
        except cluster_files.SchedulerFileError as error:
            now = time.monotonic()
            invalid_since = invalid_since or now
            if "permission denied" in str(error) or now - invalid_since >= _INVALID_GRACE_SECONDS:
                raise ConnectError(str(error)) from None
        if job is not None and time.monotonic() >= next_status:
            next_status = time.monotonic() + 1.0
            last_status = status = job.status()
            if status.finished:
                raise ConnectError(f"job {job.job_id} ended ({state_words(status)}) without writing {path}; "
                                   f"its output: {status.log}")
            gone_since = _published_and_gone(job, status, path, gone_since)
        if time.monotonic() >= deadline:
            if stale:
                raise ConnectError(f"{path} still holds the stale file of {stale} after {timeout:g} s; "
                                   f"job {job.job_id} has not replaced it yet (hpcbridge status {job.job_id})")
            if last_status is not None and last_status.state == "RUNNING":
                raise ConnectError(f"no scheduler file at {path} after {timeout:g} s, though job {job.job_id} is "
                                   f"RUNNING: its Dask scheduler has not started (its output: {last_status.log})")
            if last_status is not None and last_status.state == "PENDING":
                raise ConnectError(f"no scheduler file at {path} after {timeout:g} s: job {job.job_id} is still "
                                   f"queued ({state_words(last_status)}; hpcbridge status {job.job_id})")
            raise ConnectError(
                f"no scheduler file at {path} after {timeout:g} s: the job may still be queued "
                "(hpcbridge status JOB) or may have failed before starting Dask (see its log)"
            )
        time.sleep(POLL_SECONDS)


GONE_CONFIRM_SECONDS = 3.0  # a requeued Slurm job is RUNNING a moment before its new start empties the old output


def _published_and_gone(job: SubmittedJob, status: JobStatus, path: Path, since: float | None) -> float | None:
    """Raise :class:`ConnectError` when a RUNNING job published its scheduler file and the file is gone
    (for :data:`GONE_CONFIRM_SECONDS`); return since when that has been seen (None when it has not)."""
    if status.state != "RUNNING" or path.exists():
        return None
    said = read_job_output(status.log)
    if said is None or not said.published:
        return None
    now = time.monotonic()
    if since is None or now - since < GONE_CONFIRM_SECONDS:
        return since or now
    if said.warnings:
        raise ConnectError(f"job {job.job_id} is RUNNING, and its output says: {said.warnings[-1]} ({status.log})")
    raise ConnectError(f"job {job.job_id} is RUNNING and published its scheduler file {path}, which is gone: its "
                       "folder was removed while the job runs (a scratch purge?) or is not mounted on this machine; "
                       f"no new client can attach (its output: {status.log})")


def restarts_of(job: SubmittedJob | None) -> int | None:
    """How often the batch system has requeued ``job`` (None without a job or an answer)."""
    if job is None:
        return None
    try:
        return int(job.status().restarts)
    except Exception:  # the batch system did not answer: no baseline, as before
        return None


def certificates_for(info: ClusterInfo, job: SubmittedJob | None) -> Certificates | None:
    """The certificates a client presents to the scheduler in ``info``; checked readable, never guessed."""
    if not info.address.startswith("tls://"):
        return None
    certificates = info.certificates or _configured_certificates()
    if certificates is None:
        raise ConnectError(
            f"the scheduler at {info.address} speaks TLS and this client has no certificates: none beside "
            f"{info.path} (expected in {cluster_files.certificate_dir(info.path)}) and none in Dask's config "
            "(DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT, ..._CLIENT__KEY)")
    for kind, path in (("CA certificate", certificates.ca_file), ("certificate", certificates.cert),
                       ("key", certificates.key)):
        try:
            with open(path, "rb"):
                pass
        except PermissionError:
            raise ConnectError(f"cannot read the cluster's TLS {kind} {path}: permission denied; only the "
                               "cluster's owner can attach") from None
        except OSError as error:
            _raise_if_ended(info, job, "its certificates are gone")
            raise ConnectError(f"the cluster's TLS {kind} {path} (named by {info.path}) is not there "
                               f"({error.strerror}): {_why_missing(job)}") from None
    return certificates


def _why_missing(job: SubmittedJob | None) -> str:
    """Why a file of a job that has not ended is not there, in words that fit what the batch system says."""
    try:
        status = job.status() if job is not None else None
    except (BatchCommandError, ValueError):
        status = None
    if status is not None and status.state == "RUNNING":
        return (f"job {job.job_id} is RUNNING, so its folder was removed while it runs (a scratch purge?) or is not "
                "mounted on this machine; the cluster runs on, but no new client can attach to it and a worker "
                f"that restarts cannot rejoin it (hpcbridge cancel {job.job_id}, then submit again)")
    if status is not None:
        return f"job {job.job_id} is {state_words(status)}; a job removes its certificates when it ends"
    return "a job removes its certificates when it ends, and a scratch purge removes them while it runs"


def _raise_if_ended(info: ClusterInfo, job: SubmittedJob | None, what: str) -> None:
    """Raise :class:`ConnectError` saying the file is stale when its job has ended."""
    if job is None:
        return
    try:
        status = job.status()
    except (BatchCommandError, ValueError):  # no such batch system here, or it does not answer
        return
    if status.finished or status.state == "UNKNOWN":
        raise ConnectError(f"the scheduler at {info.address} (from {info.path}) does not answer, and job {job.job_id} "
                           f"has ended ({state_words(status)}): the scheduler file is stale ({what})")


def _configured_certificates() -> Certificates | None:
    import dask.config

    values = [dask.config.get(f"distributed.comm.tls.{key}", None) for key in ("ca-file", "client.cert", "client.key")]
    if not all(values):
        return None
    return Certificates(*(Path(value) for value in values))


def wait_for_scheduler(info: ClusterInfo, certificates: Certificates | None, deadline: float, timeout: float,
                        job: SubmittedJob | None) -> None:
    """Probe the scheduler until it answers; stop early when its job has ended or TLS refuses us.

    Probing before a ``distributed.Client`` exists keeps a refusal quick (a refused Client takes
    ~40 s to let the interpreter exit) and lets the wait honour ``timeout`` in full (a Client
    gives up on a dead address after at most its own 30 s).
    """
    while True:
        remaining = deadline - time.monotonic()
        try:
            if certificates is not None:
                check_handshake(info.address, certificates, timeout=max(0.5, min(PROBE_SECONDS, remaining)))
            elif not address_answers(info.address, timeout=max(0.5, min(PROBE_SECONDS, remaining))):
                raise ConnectionRefusedError("connection refused or timed out")
            return
        except TLSRefused as error:
            raise ConnectError(f"the scheduler at {info.address} (from {info.path}) and this client do not "
                               f"trust each other: {error}") from None
        except OSError as error:
            last_error = error
        _raise_if_ended(info, job, str(last_error))
        if time.monotonic() >= deadline:
            raise ConnectError(f"the scheduler at {info.address} (from {info.path}) does not answer: tried for "
                               f"{timeout:g} s ({last_error}); a file left by a job that has ended points at a "
                               "dead address (hpcbridge status JOB)")
        time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def state_words(status: JobStatus) -> str:
    return status.state + (f": {status.reason}" if status.reason else "")
