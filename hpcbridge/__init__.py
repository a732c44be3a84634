"""hpcbridge: a Dask cluster on a Slurm, PBS or LSF batch system, for Python and MATLAB users.

The flow is one way: a :class:`JobSpec` is rendered into a batch script, a backend submits it,
the job writes a scheduler file, and :func:`connect` attaches a client through that file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["JobSpec", "SpecError", "connect", "Bridge", "Broadcast", "Run", "ItemError", "RunLost",
           "WalltimeReached", "JobCancelled", "NodeFailed", "SchedulerLost", "WorkersLeft", "RunMismatchError",
           "__version__"]
_BRIDGE_NAMES = ("connect", "Bridge", "Broadcast", "Run", "ItemError", "RunLost", "WalltimeReached", "JobCancelled",
                 "NodeFailed", "SchedulerLost", "WorkersLeft", "RunMismatchError")

if TYPE_CHECKING:
    from hpcbridge.bridge import Bridge, Broadcast, ItemError, Run, connect
    from hpcbridge.spec import JobSpec, SpecError


def __getattr__(name: str) -> Any:
    """Import on first use, so ``hpcbridge render`` does not pay for importing Dask."""
    if name in _BRIDGE_NAMES:
        from hpcbridge import bridge

        return getattr(bridge, name)
    if name in ("JobSpec", "SpecError"):
        from hpcbridge import spec

        return getattr(spec, name)
    raise AttributeError(f"module 'hpcbridge' has no attribute {name!r}")
