"""The ready-to-use scripts in slurm/, pbs/, lsf/ and sge/ are exactly what the templates render."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hpcbridge.job.ready_scripts import ready_scripts, stale_scripts

ROOT = Path(__file__).resolve().parent.parent


def test_ready_scripts_match_the_templates() -> None:
    assert stale_scripts(ROOT) == [], "regenerate with: python -m hpcbridge.job.ready_scripts"


def test_every_scheduler_has_the_common_cases() -> None:
    for scheduler in ("slurm", "pbs", "lsf", "sge"):
        names = {path.name for path in (ROOT / scheduler).glob("*.sh")}
        assert names == {"scheduler-file.sh", "dask-mpi.sh", "infiniband-2node.sh"}


@pytest.mark.parametrize("name", sorted(ready_scripts()))
def test_ready_scripts_pass_shellcheck(name: str) -> None:
    checked = subprocess.run(["shellcheck", str(ROOT / name)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def test_a_template_change_is_detected(tmp_path: Path) -> None:
    for name in ready_scripts():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    assert stale_scripts(tmp_path) == []
    edited = tmp_path / "pbs" / "dask-mpi.sh"
    edited.write_text(edited.read_text().replace("#PBS -j oe", "#PBS -j eo"))
    assert stale_scripts(tmp_path) == ["pbs/dask-mpi.sh"]
