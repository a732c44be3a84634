"""The ready-to-use scripts in ``slurm/``, ``pbs/``, ``lsf/`` and ``sge/``: the common cases, rendered.

They are rendered from the templates like any other script, so they cannot drift from them
unnoticed: a test renders them again and compares. After changing a template, regenerate with
``python -m hpcbridge.job.ready_scripts``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpcbridge.job.render import packaged_template_dir, render_script
from hpcbridge.job.spec import DEFAULT_SCHEDULER_FILE, JobSpec

# The ready scripts are for any site, so they name no venv: python3 after the --setup lines.
_ONE_NODE = dict(python="python3", nodes=1, ntasks_per_node=4, cpus_per_task=2, mem_per_cpu="2G", walltime="01:00:00")
_DASK_MPI = dict(python="python3", mode="mpi", nodes=2, ntasks_per_node=4, cpus_per_task=2, mem_per_cpu="2G", walltime="01:00:00")
_INFINIBAND = dict(python="python3", nodes=2, ntasks_per_node=8, cpus_per_task=4, mem_per_cpu="4G", walltime="04:00:00",
                   interface="ib0")


def ready_scripts() -> dict[str, JobSpec]:
    """Each ready-to-use script's path (relative to the repository) and the spec it renders."""
    scripts = {}
    for scheduler in ("slurm", "pbs", "lsf", "sge"):
        # Grid Engine's parallel environments are named by each site (qconf -spl): smp and mpi are common names.
        one_node, several = ({"pe": "smp"}, {"pe": "mpi"}) if scheduler == "sge" else ({}, {})
        # Spelled for any user (~/.hpcbridge/jobs/...), whatever $HPCBRIDGE_HOME the renderer has.
        spelled = {"scheduler_file": DEFAULT_SCHEDULER_FILE}
        one_node, several = {**one_node, **spelled}, {**several, **spelled}
        scripts[f"{scheduler}/scheduler-file.sh"] = JobSpec(scheduler=scheduler, job_name="dask", **_ONE_NODE, **one_node)
        scripts[f"{scheduler}/dask-mpi.sh"] = JobSpec(scheduler=scheduler, job_name="dask-mpi", **_DASK_MPI, **several)
        scripts[f"{scheduler}/infiniband-2node.sh"] = JobSpec(scheduler=scheduler, job_name="dask-ib", **_INFINIBAND,
                                                              **several)
    return scripts


def render_ready_script(name: str) -> str:
    """Render one ready-to-use script from the packaged templates only (no site overrides)."""
    return render_script(ready_scripts()[name], template_dirs=[packaged_template_dir()])


def stale_scripts(root: Path) -> list[str]:
    """The ready-to-use scripts under ``root`` that differ from what the templates render now."""
    return [name for name in ready_scripts()
            if not (root / name).exists() or (root / name).read_text() != render_ready_script(name)]


def write_scripts(root: Path) -> list[str]:
    """Render every ready-to-use script into ``root``; return the ones that changed."""
    changed = stale_scripts(root)
    for name in changed:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_ready_script(name))
        path.chmod(0o755)
    return changed


def main(argv: list[str] | None = None) -> int:
    """Regenerate (or with --check, only compare) the ready-to-use scripts."""
    parser = argparse.ArgumentParser(prog="python -m hpcbridge.job.ready_scripts", description=main.__doc__)
    parser.add_argument("root", nargs="?", default=".", type=Path, help="the repository's top folder")
    parser.add_argument("--check", action="store_true", help="exit 1 if any script is out of date")
    options = parser.parse_args(argv)
    if options.check:
        stale = stale_scripts(options.root)
        for name in stale:
            print(f"out of date: {name}")
        return 1 if stale else 0
    for name in write_scripts(options.root):
        print(f"wrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
