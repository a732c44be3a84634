"""Batch-system backends: one module per system, each a handful of small hooks (see ``base``)."""

from __future__ import annotations

from hpcbridge.backends.base import Backend, BatchCommandError, JobNotFound, JobStatus
from hpcbridge.backends.local import LocalBackend
from hpcbridge.backends.lsf import LSFBackend
from hpcbridge.backends.pbs import PBSBackend
from hpcbridge.backends.sge import SGEBackend
from hpcbridge.backends.slurm import SlurmBackend
from hpcbridge.backends.ssh import SSHBackend

BACKENDS: dict[str, type] = {"slurm": SlurmBackend, "pbs": PBSBackend, "lsf": LSFBackend, "sge": SGEBackend,
                             "local": LocalBackend, "ssh": SSHBackend}

__all__ = ["Backend", "BatchCommandError", "JobNotFound", "JobStatus", "get_backend", "BACKENDS"]


def get_backend(scheduler: str) -> Backend:
    """The backend for a scheduler name as the spec spells it (``slurm``, ``pbs``, ``lsf``, ``sge``, ``local``, ``ssh``)."""
    try:
        return BACKENDS[scheduler]()
    except KeyError:
        raise ValueError(f"no backend for scheduler {scheduler!r}; known: {', '.join(BACKENDS)}") from None
