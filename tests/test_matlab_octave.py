"""The MATLAB toolbox in GNU Octave: every file parses, has MATLAB-style help, and checks its arguments.

MATLAB is not available here; Octave runs the parts that do not call Python (argument parsing
with inputParser, help text). `make test` installs Octave (Debian's octave package).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

TOOLBOX = Path(__file__).parents[1] / "matlab"
OCTAVE = shutil.which("octave-cli")


@pytest.fixture(autouse=True)
def _octave_is_installed() -> None:
    assert OCTAVE, "GNU Octave is not installed: make test installs it (apt-get install octave)"


def octave(code: str) -> str:
    done = subprocess.run([OCTAVE, "--no-gui", "--norc", "--eval", f"addpath('{TOOLBOX}'); {code}"],
                          capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def test_every_function_has_an_h1_line_naming_it() -> None:
    names = sorted(path.stem for path in (TOOLBOX / "+hpcbridge").glob("*.m"))
    assert {"connect", "broadcast", "map", "gather", "close", "toPython", "fromPython"} <= set(names)
    script = "".join(f"t = help('hpcbridge.{name}'); printf('%s\\n', strtrim(strsplit(t, \"\\n\"){{1}}));"
                     for name in names)
    lines = octave(script).splitlines()
    assert [line.split()[0] for line in lines[:len(names)]] == [name.upper() for name in names]


def test_bad_arguments_are_refused_before_python_is_called() -> None:
    out = octave(
        "try, hpcbridge.map('c.json', 3, {1}); catch e, disp(e.message); end;"
        "try, hpcbridge.connect('c.json', 'Workers', 2.5); catch e, disp(e.message); end;"
        "try, hpcbridge.gather('c.json', 'r', 'Timeout', -1); catch e, disp(e.message); end;"
        "try, hpcbridge.map('c.json', 'numpy:abs', {1}, 'ChunkSize', 1.5); catch e, disp(e.message); end;")
    assert "hpcbridge.map: failed validation of FUNC" in out
    assert "hpcbridge.connect: failed validation of WORKERS" in out
    assert "hpcbridge.gather: failed validation of TIMEOUT" in out
    assert "hpcbridge.map: failed validation of CHUNKSIZE" in out


def test_gather_says_the_timeout_it_was_given_not_the_time_left(tmp_path: Path) -> None:
    """hpcbridge.gather against a stand-in for MATLAB's ``py`` whose run never finishes."""
    (tmp_path / "py.m").write_text(
        "function p = py()\n"
        "p.hpcbridge.client.matlab.wait = @(file, name, t) waited(t);\n"
        "end\n"
        "function s = waited(t)\n"
        "pause(min(t, 0.05));\n"
        "s = struct('done', int64(1), 'total', int64(4), 'finished', false, 'failed', false);\n"
        "end\n")
    out = octave(f"addpath('{tmp_path}');"
                 "try, hpcbridge.gather('c.json', 'run-x', 'Timeout', 0.3, 'Progress', false);"
                 "catch e, disp(e.identifier); disp(e.message); end;")
    assert "hpcbridge:timeout" in out
    assert "run run-x: 1 of 4 items done after 0.3 s; the results stay on the cluster" in out


def test_gather_and_results_show_what_collecting_noticed_as_matlab_warnings(tmp_path: Path) -> None:
    """hpcbridge.gather and hpcbridge.results against a stand-in for MATLAB's ``py`` whose run left notices."""
    notice = "run run-x: 2 of 2 chunks (4 of 4 items) were not saved in /scratch/runs/run-x: [Errno 28] No space left"
    (tmp_path / "py.m").write_text(
        "function p = py()\n"
        "p.hpcbridge.client.matlab.wait = @(file, name, t) struct('done', int64(4), 'total', int64(4), "
        "'finished', true, 'failed', false);\n"
        "p.hpcbridge.client.matlab.gather = @(file, name, t, stack) 42;\n"
        "p.hpcbridge.client.matlab.results = @(file, name, t, stack, partial) 43;\n"
        f"p.hpcbridge.client.matlab.notices = @(file, name) {{'{notice}'}};\n"
        "end\n")
    out = octave(f"addpath('{tmp_path}');"
                 "x = hpcbridge.gather('c.json', 'run-x', 'Progress', false); disp(x);"
                 "[~, id] = lastwarn(); disp(id); lastwarn('');"
                 "y = hpcbridge.results('c.json', 'run-x'); disp(y); [~, id] = lastwarn(); disp(id);")
    assert out.count(f"warning: {notice}") == 2, out
    assert out.split().count("hpcbridge:runDirectory") == 2 and "42" in out and "43" in out, out


def test_a_function_handle_is_told_to_name_a_python_function() -> None:
    out = octave("try, hpcbridge.map('c.json', @(x) x.^2, {1}); catch e, disp(e.identifier); disp(e.message); end")
    assert "hpcbridge:map:functionHandle" in out
    assert "name a Python function as text, 'module:function' (e.g. 'numpy:sqrt')" in out


def test_connect_with_job_options_submits_them_and_shows_python_warnings(tmp_path: Path) -> None:
    """hpcbridge.connect given job options, against a stand-in for MATLAB's ``py``."""
    (tmp_path / "py.m").write_text(
        "function p = py()\n"
        "p.hpcbridge.matlab.connect = @(options, workers, timeout) shown(options, workers, timeout);\n"
        "p.hpcbridge.client.matlab.warnings_said = @() {'SpecWarning: protocol tcp: not encrypted'};\n"
        "end\n"
        "function s = shown(options, workers, timeout)\n"
        "printf('%s=%s;', 'names', strjoin(fieldnames(options)', ','));\n"
        "printf('nodes=%g;workers=%g;timeout=%g;module=%s\\n', options.Nodes, workers, timeout, options.Module{1});\n"
        "s = struct('cluster', '/x/scheduler.json', 'job_id', '42');\n"
        "end\n")
    out = octave(f"addpath('{tmp_path}'); c = hpcbridge.connect('Scheduler', 'slurm', 'Nodes', 2, "
                 "'ntasks-per-node', 4, 'Workers', 8, 'Module', {'gcc/12'}); disp(c.job_id);"
                 "try, hpcbridge.submit('Nodes'); catch e, disp(e.message); end")
    assert "names=Scheduler,Nodes,ntasks_per_node,Module;nodes=2;workers=8;timeout=300;module=gcc/12" in out
    assert "warning: SpecWarning: protocol tcp: not encrypted" in out
    assert "\n42\n" in out
    assert "hpcbridge.submit: options come in name-value pairs" in out
