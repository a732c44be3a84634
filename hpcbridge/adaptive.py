"""Adaptive mode: the same job spec drives dask-jobqueue, which adds and removes batch jobs.

In scheduler-file mode one batch job holds the whole cluster. In adaptive mode the Dask
scheduler runs in the client's own process and dask-jobqueue submits one batch job per
``ntasks_per_node`` workers as the work needs them (``cluster.adapt(minimum=..., maximum=...)``),
cancelling them when they idle. hpcbridge only translates the spec; the scaling is
dask-jobqueue's own (``SLURMCluster``, ``PBSCluster``, ``LSFCluster``).
"""

from __future__ import annotations

from typing import Any

from hpcbridge import units
from hpcbridge.spec import JobSpec, SpecError


def jobqueue_options(spec: JobSpec) -> dict[str, Any]:
    """dask-jobqueue keyword arguments for one batch job of ``spec`` (one node, its tasks as workers)."""
    if spec.nodes != 1:
        raise SpecError("nodes", spec.nodes, "1 in adaptive mode (each batch job is one node; scale adds jobs)")
    if spec.protocol != "tcp":
        raise SpecError("protocol", spec.protocol, "tcp in adaptive mode, given explicitly (protocol='tcp'): "
                        "hpcbridge's per-job certificates are not made for dask-jobqueue's jobs yet")
    if spec.mem is None and spec.mem_per_cpu is None:
        raise SpecError("mem", None, "a memory size (mem or mem_per_cpu): dask-jobqueue needs each job's memory")
    cores = spec.ntasks_per_node * spec.cpus_per_task
    job_memory = spec.mem or spec.mem_per_cpu * cores
    prologue = [f"module load {' '.join(spec.modules)}"] if spec.modules else []
    options: dict[str, Any] = {
        "cores": cores,
        "processes": spec.ntasks_per_node,
        "memory": f"{job_memory}MiB",
        "python": spec.python,
        "job_name": spec.job_name,
        "interface": spec.interface,
        "scheduler_options": {"interface": spec.scheduler_interface, "dashboard_address": ":0"},
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
        options["resource_spec"] = (f"nodes=1:ppn={cores}" if spec.pbs_flavor == "torque"
                                    else f"select=1:ncpus={cores}:mem={job_memory}mb")
    elif spec.scheduler == "lsf":
        options.update(project=spec.account, ncpus=cores, mem=job_memory * 2**20, lsf_units="MB", use_stdin=True)
    else:
        raise SpecError("scheduler", spec.scheduler, "slurm, pbs or lsf in adaptive mode")
    return options


def jobqueue_cluster(spec: JobSpec, **overrides: Any):
    """A dask-jobqueue cluster for ``spec``; call ``.adapt(...)`` or ``.scale(jobs=N)`` on it.

    ``overrides`` go to dask-jobqueue unchanged (``log_directory``, ``worker_extra_args``, ...).
    """
    import dask_jobqueue

    cluster_class = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
                     "lsf": dask_jobqueue.LSFCluster}
    options = jobqueue_options(spec)
    return cluster_class[spec.scheduler](**{**options, **overrides})
