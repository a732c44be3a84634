"""The wheel carries the templates, so a non-editable install renders without the source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_the_templates_and_renders_from_them(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path),
                    str(ROOT)], check=True, timeout=300)
    wheel = next(tmp_path.glob("hpcbridge-*.whl"))
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.startswith("hpcbridge/templates/")}
    expected = {f"hpcbridge/templates/{p.relative_to(ROOT / 'templates')}" for p in (ROOT / "templates").rglob("*.j2")}
    assert expected and expected <= shipped

    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    done = subprocess.run(
        [sys.executable, "-c",
         "import hpcbridge.job.render as r; from hpcbridge.job.spec import JobSpec;"
         "print(r.packaged_template_dir()); print(r.render_script(JobSpec(scheduler='slurm')))"],
        cwd=tmp_path, env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True,
    )
    template_dir, script = done.stdout.split("\n", 1)
    assert template_dir == str(unpacked / "hpcbridge" / "templates")
    assert script.startswith("#!/bin/bash\n#SBATCH --job-name=hpcbridge\n")


def test_help_on_the_package_lists_its_public_names() -> None:
    import pydoc

    import hpcbridge

    text = pydoc.render_doc(hpcbridge, renderer=pydoc.plaintext)
    for name in ("connect(", "class JobSpec", "class ConnectError", "class ArgumentError", "class Bridge",
                 "class ModuleMissing", "class Run"):
        assert name in text, name
    assert issubclass(hpcbridge.ConnectError, TimeoutError)


def test_make_demo_installs_only_what_the_demo_needs() -> None:
    """``make demo`` installs hpcbridge alone; ``make test`` adds the tests' and the examples' extras."""
    demo = subprocess.run(["make", "-n", "demo"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    installs = [line for line in demo.splitlines() if " pip install " in line]
    assert len(installs) == 1 and installs[0].endswith("--editable ."), demo
    test = subprocess.run(["make", "-n", "test"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "--editable '.[test,examples]'" in test
