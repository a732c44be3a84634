"""The package's layout (README, "Layout"): imports run one way, checked by import-linter's contracts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(folder)}
    return subprocess.run([str(LINT), "--config", str(folder / "pyproject.toml"), "--no-cache"], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_package_keeps_its_import_contracts() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("cluster/reaches_up.py", "from hpcbridge.client import runs", "The flow runs one way"),
    ("job/reaches_in.py", "from hpcbridge.cluster import chunks", "The login node builds"),
    ("client/circle.py", "from hpcbridge.client import bridge", "No import circle"),
])
def test_an_import_against_the_layout_breaks_a_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    shutil.copytree(ROOT / "hpcbridge", tmp_path / "hpcbridge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "hpcbridge" / module).write_text(line + "\n")
    if module == "client/circle.py":  # bridge imports collect: collect importing the new module closes a circle
        collect = tmp_path / "hpcbridge" / "client" / "collect.py"
        collect.write_text(collect.read_text().replace("import itertools\n", "import itertools\n\nfrom hpcbridge.client import circle  # noqa: F401\n", 1))
    result = lint(tmp_path)
    assert result.returncode != 0
    assert broken in result.stdout and "BROKEN" in result.stdout
