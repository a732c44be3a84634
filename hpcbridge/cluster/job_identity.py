"""Which batch job a worker runs in: read on the worker, from the variable its batch system sets.

:class:`hpcbridge.Cluster` removes worker jobs whole (it cancels them); before it does, it asks
every worker which job it belongs to (a Dask ``run`` message), so that the workers of the job to
be cancelled retire first and hand their data to the others.
"""

from __future__ import annotations

import os

# The variable each batch system (and the local backend) sets in its jobs' processes.
JOB_ID_VARIABLES = {"slurm": "SLURM_JOB_ID", "pbs": "PBS_JOBID", "lsf": "LSB_JOBID", "sge": "JOB_ID", "local": "HPCBRIDGE_JOB_ID",
                    "ssh": "HPCBRIDGE_JOB_ID"}


def job_id(scheduler: str) -> str | None:
    """Run on a worker: the id of the ``scheduler`` job it runs in, or None when it cannot tell."""
    variable = JOB_ID_VARIABLES.get(scheduler)
    return os.environ.get(variable) if variable else None
