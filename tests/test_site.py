"""A centre writes its settings once: site profiles in Dask's config and site templates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def hpcbridge(*args: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command line in a fresh process, as a user's shell would with these variables."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}
    return subprocess.run([sys.executable, "-m", "hpcbridge.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**clean, **environment})


@pytest.fixture
def site_config(tmp_path: Path) -> dict[str, str]:
    folder = tmp_path / "dask-config"
    folder.mkdir()
    (folder / "hpcbridge.yaml").write_text(
        "hpcbridge:\n"
        "  scheduler: slurm\n"
        "  slurm:\n"
        "    account: proj42\n"
        "    queue: compute\n"
        "    interface: ib0\n"
        "    modules: [gcc/12.2, openmpi/4.1]\n"
        "    ntasks-per-node: 8\n"
    )
    return {"DASK_CONFIG": str(folder)}


def test_a_yaml_profile_fills_what_the_user_leaves_out(site_config) -> None:
    done = hpcbridge("render", environment=site_config)
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --account=proj42\n" in done.stdout
    assert "#SBATCH --partition=compute\n" in done.stdout
    assert "#SBATCH --ntasks-per-node=8\n" in done.stdout
    assert "module load gcc/12.2 openmpi/4.1\n" in done.stdout
    assert "    --interface ib0\n" in done.stdout


def test_options_given_win_over_the_profile(site_config) -> None:
    done = hpcbridge("render", "--account", "mine", "--ntasks-per-node", "2", environment=site_config)
    assert "#SBATCH --account=mine\n" in done.stdout and "#SBATCH --ntasks-per-node=2\n" in done.stdout
    local = hpcbridge("render", "--scheduler", "local", environment=site_config)
    assert local.returncode == 0 and "proj42" not in local.stdout


def test_environment_variables_set_profile_values() -> None:
    done = hpcbridge("render", environment={"DASK_HPCBRIDGE__SCHEDULER": "pbs",
                                            "DASK_HPCBRIDGE__PBS__PBS_FLAVOR": "torque",
                                            "DASK_HPCBRIDGE__PBS__WALLTIME": "02:00:00"})
    assert done.returncode == 0, done.stderr
    assert "#PBS -l nodes=1:ppn=1\n" in done.stdout and "#PBS -l walltime=02:00:00\n" in done.stdout


def test_a_typo_in_the_profile_names_the_key_and_the_known_ones(tmp_path) -> None:
    (tmp_path / "hpcbridge.yaml").write_text("hpcbridge:\n  slurm:\n    acount: proj42\n")
    done = hpcbridge("render", "--scheduler", "slurm", environment={"DASK_CONFIG": str(tmp_path)})
    assert done.returncode == 2
    error = done.stderr.splitlines()[-1]
    assert error.startswith(f"Error: unknown key hpcbridge.slurm.acount in {tmp_path / 'hpcbridge.yaml'}: "
                            "did you mean 'account'?")
    assert "is not allowed" not in error and "--acount" not in error and "Traceback" not in done.stderr
    assert "known keys: account, array" in error


def test_a_typo_in_a_profile_variable_is_an_unknown_key_with_a_suggestion() -> None:
    done = hpcbridge("render", "--scheduler", "slurm", environment={"DASK_HPCBRIDGE__SLURM__ACOUNT": "proj42"})
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith(
        "Error: unknown key hpcbridge.slurm.acount (from the environment variable DASK_HPCBRIDGE__SLURM__ACOUNT): "
        "did you mean 'account'?")


def test_a_site_template_overrides_and_extends_a_packaged_one(tmp_path) -> None:
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "directives.sh.j2").write_text(
        '{% include "packaged/slurm/directives.sh.j2" %}\n#SBATCH --constraint=ib\n# Centre X: see https://hpc.example/dask\n')
    done = hpcbridge("render", "--scheduler", "slurm", environment={"DASK_HPCBRIDGE__TEMPLATES": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "#SBATCH --output=hpcbridge-%j.out\n#SBATCH --constraint=ib\n# Centre X" in done.stdout


def test_a_broken_site_template_is_a_one_line_error_and_writes_nothing(tmp_path) -> None:
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "directives.sh.j2").write_text("#SBATCH --x={{ spec.nodes \n")
    target = tmp_path / "job.sh"
    done = hpcbridge("render", "--scheduler", "slurm", "-o", str(target),
                     environment={"DASK_HPCBRIDGE__TEMPLATES": str(tmp_path)})
    assert done.returncode == 1
    assert done.stderr.startswith("Error: template ") and "line 1" in done.stderr
    assert "Traceback" not in done.stderr
    assert not target.exists()


def test_a_module_given_adds_to_the_profiles_unless_no_profile_modules(site_config) -> None:
    added = hpcbridge("render", "--module", "python/3.11", "--module", "gcc/12.2", environment=site_config)
    assert added.returncode == 0, added.stderr
    assert "module load gcc/12.2 openmpi/4.1 python/3.11\n" in added.stdout  # the site's first, once each
    alone = hpcbridge("render", "--module", "python/3.11", "--no-profile-modules", environment=site_config)
    assert alone.returncode == 0, alone.stderr
    assert "module load python/3.11\n" in alone.stdout and "openmpi" not in alone.stdout
