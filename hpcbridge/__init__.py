"""hpcbridge: a Dask cluster on a Slurm, PBS or LSF batch system (or a host list over ssh), for Python and MATLAB users.

The flow is one way: a :class:`JobSpec` is rendered into a batch script, a backend submits it,
the job writes a scheduler file, and :func:`connect` attaches a client through that file::

    import hpcbridge

    with hpcbridge.connect("~/.hpcbridge/jobs/4242/scheduler.json", n_workers=8) as bridge:
        weights = bridge.broadcast(big_array)            # once to every worker
        run = bridge.map(score, candidates, args=(weights,))  # returns at once; the cluster keeps it
        results = bridge.gather(run)                     # in input order

    from hpcbridge.job.render import render_script
    spec = hpcbridge.JobSpec(scheduler="slurm", nodes=2, ntasks_per_node=4, walltime="2h30m")
    print(render_script(spec))                           # or: hpcbridge render --help

    with hpcbridge.Cluster(scheduler="slurm", nodes=2, walltime="1h") as cluster:  # Dask's cluster manager
        client = distributed.Client(cluster)             # TLS with the job's certificates
        cluster.scale(16)                                # worker jobs that join it

Errors: :class:`SpecError` (a job option), :class:`ArgumentError` (an argument of connect, map,
broadcast or gather), :class:`ConnectError` (the cluster could not be reached in time),
:class:`ItemError` (one item failed; :class:`ItemKilledWorker` when it ended its worker process,
:class:`ItemTimedOut` past the map's ``item_timeout``), :class:`ModuleMissing` (the cluster lacks a module the
function needs) and :class:`RunLost` with its causes. :func:`list_clusters` lists my clusters on every batch
system (``hpcbridge list``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpcbridge._version import __version__

__all__ = ["Cluster", "security", "JobSpec", "SpecError", "SpecWarning", "ArgumentError", "ConnectError", "connect", "Bridge", "Broadcast", "Run", "ItemError", "ItemKilledWorker",
           "ItemTimedOut", "RunLost", "WalltimeReached", "JobCancelled", "NodeFailed", "SchedulerLost", "SchedulerUnreachable", "WorkersLeft",
           "RunMismatchError", "RunDirectoryError", "RunDirectoryWarning", "ModuleMissing", "list_clusters", "__version__"]
_BRIDGE_NAMES = ("connect", "ConnectError", "Bridge", "Broadcast", "Run", "ItemError", "ItemKilledWorker", "ItemTimedOut",
                 "RunLost", "WalltimeReached", "JobCancelled",
                 "NodeFailed", "SchedulerLost", "SchedulerUnreachable", "WorkersLeft", "RunMismatchError")

if TYPE_CHECKING:
    from hpcbridge.client.arguments import ArgumentError
    from hpcbridge.client.bridge import (
        Bridge,
        Broadcast,
        ConnectError,
        ItemError,
        ItemKilledWorker,
        ItemTimedOut,
        Run,
        connect,
    )
    from hpcbridge.client.credentials import security
    from hpcbridge.client.missing_modules import ModuleMissing
    from hpcbridge.cluster_manager import Cluster
    from hpcbridge.job.listing import list_clusters
    from hpcbridge.job.spec import JobSpec, SpecError, SpecWarning
    from hpcbridge.rundir import RunDirectoryError, RunDirectoryWarning


def __getattr__(name: str) -> Any:
    """Import on first use, so ``hpcbridge render`` does not pay for importing Dask."""
    if name in _BRIDGE_NAMES:
        from hpcbridge.client import bridge

        return getattr(bridge, name)
    if name in ("JobSpec", "SpecError", "SpecWarning"):
        from hpcbridge.job import spec

        return getattr(spec, name)
    if name in ("RunDirectoryError", "RunDirectoryWarning"):
        from hpcbridge import rundir

        return getattr(rundir, name)
    if name == "Cluster":
        from hpcbridge.cluster_manager import Cluster

        return Cluster
    if name == "security":
        from hpcbridge.client.credentials import security

        return security
    if name == "ModuleMissing":
        from hpcbridge.client.missing_modules import ModuleMissing

        return ModuleMissing
    if name == "list_clusters":
        from hpcbridge.job.listing import list_clusters

        return list_clusters
    if name == "ArgumentError":
        from hpcbridge.client.arguments import ArgumentError

        return ArgumentError
    raise AttributeError(f"module 'hpcbridge' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names too, so that ``help(hpcbridge)`` and tab completion list them (importing Dask)."""
    return sorted({*globals(), *__all__})
