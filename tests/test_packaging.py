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


def _fresh_environment(tmp_path: Path) -> Path:
    """A new venv outside the clone, holding nothing of hpcbridge, that sees this one's dependencies.

    Installing distributed and the rest again from the local index would take minutes; a path
    file adds this environment's site-packages after the venv's own (its .pth files, among them
    the editable install of the clone, are not read), so only the wheel installed there brings hpcbridge.
    """
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    Path(own, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _outside_environment(home: Path) -> dict[str, str]:
    """Environment variables of a user outside the clone (no PYTHONPATH, nothing of this test session)."""
    import os

    drop = ("PYTHONPATH", "HPCBRIDGE_TEST_SESSION", "VIRTUAL_ENV", "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST")
    return {**{k: v for k, v in os.environ.items() if k not in drop and not k.startswith("PYTEST_")},
            "HPCBRIDGE_HOME": str(home)}


def test_the_wheel_and_the_sdist_work_outside_the_clone(tmp_path: Path) -> None:
    """Built as a release is, installed in a fresh environment: the demo from the wheel, the sdist's own tests."""
    import tarfile

    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(ROOT)],  # the wheel is built from the sdist
                   check=True, timeout=300, capture_output=True)
    wheel, sdist = next(dist.glob("hpcbridge-*.whl")), next(dist.glob("hpcbridge-*.tar.gz"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "hpcbridge/matlab/+hpcbridge/connect.m" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), names
    venv = _fresh_environment(tmp_path)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=120)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    environment = _outside_environment(tmp_path / "home")

    toolbox = subprocess.run([str(venv / "bin" / "hpcbridge"), "matlab-path"], capture_output=True, text=True,
                             timeout=60, cwd=elsewhere, env=environment)
    assert toolbox.returncode == 0, toolbox.stderr
    folder = Path(toolbox.stdout.strip())
    assert folder.is_relative_to(venv) and (folder / "+hpcbridge" / "connect.m").is_file(), folder

    demo = subprocess.run([str(venv / "bin" / "hpcbridge"), "demo", "--upper", "10000"], capture_output=True,
                          text=True, timeout=120, cwd=elsewhere, env=environment)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "  sum:     10218029" in demo.stdout, demo.stdout

    source = tmp_path / "source"
    with tarfile.open(sdist) as archive:
        archive.extractall(source, filter="data")
    unpacked = next(source.glob("hpcbridge-*"))
    for needed in ("LICENSE", "examples/truss.py", "benchmarks/compare.py", "matlab/+hpcbridge/connect.m",
                   "slurm/scheduler-file.sh", "pbs/dask-mpi.sh", "lsf/infiniband-2node.sh"):
        assert (unpacked / needed).is_file(), needed
    tests = subprocess.run([str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", "-n", "0", "-q",
                            "tests/test_ready_scripts.py", "tests/test_examples.py::test_every_example_has_help"],
                           capture_output=True, text=True, timeout=300, cwd=unpacked, env=environment)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-2000:]
    assert " passed" in tests.stdout and "failed" not in tests.stdout


def test_make_demo_installs_only_what_the_demo_needs() -> None:
    """``make demo`` installs hpcbridge alone; ``make test`` adds the tests' and the examples' extras."""
    demo = subprocess.run(["make", "-n", "demo"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    installs = [line for line in demo.splitlines() if " pip install " in line]
    assert len(installs) == 1 and installs[0].endswith("--editable ."), demo
    test = subprocess.run(["make", "-n", "test"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "--editable '.[test,examples]'" in test
