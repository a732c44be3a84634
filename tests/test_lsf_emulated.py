"""LSF scripts, checked without an LSF: what the real OpenLava (tests/cluster/test_openlava.py) cannot show.

OpenLava runs bsub, bjobs, bkill and blaunch on one host; these tests cover the rest: blaunch
over several hosts (broken in OpenLava), the LSF-aware mpirun of dask-mpi jobs, and the syntax of
today's LSF (memory with units, which OpenLava refuses).

What is real here: the rendered ``#BSUB`` lines are parsed by a parser that follows LSF's
documented embedded-option syntax (``bsub`` reads ``#BSUB`` lines before the first command,
with shell-like quoting), and the script itself runs as LSF would start it, with LSF's job
variables (``LSB_JOBID``, ``LSB_HOSTS``, ``LSB_MCPU_HOSTS``, ``LSB_DJOB_HOSTFILE``) set and
``blaunch`` replaced by a local launcher that starts the command once per listed host. What is
emulated: the batch system itself. Every test name here says ``emulated``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hpcbridge.backends.lsf import parse_bjobs, parse_job_id
from hpcbridge.client.bridge import connect
from hpcbridge.job.render import render_script
from hpcbridge.job.spec import JobSpec
from tests.conftest import CLIENT_SCRIPT, wait_for

# bsub options that take a value, and how LSF's documentation says the value looks.
_BSUB_VALUES = {
    "-J": re.compile(r"^[^\s\[\]]+(\[\d+(-\d+)?(:\d+)?\](%\d+)?)?$"),  # name or name[1-100:2]%10
    "-n": re.compile(r"^\d+(,\d+)?$"),
    "-R": re.compile(r"^(span|rusage|select|order|same|cu|affinity)\[[^\]]+\]$"),  # span[ptile=8], span[hosts=1]
    "-M": re.compile(r"^\d+(KB|MB|GB|TB|K|M|G|T)?!?$"),
    "-W": re.compile(r"^(\d+:)?\d+$"),
    "-q": re.compile(r"^[\w.-]+$"),
    "-P": re.compile(r"^[\w.+-]+$"),
    "-o": re.compile(r"^\S+$"),
    "-e": re.compile(r"^\S+$"),
}


def parse_bsub_directives(script: str) -> list[tuple[str, str]]:
    """The ``#BSUB`` options of a script as bsub reads them: (option, value) pairs, in order.

    bsub stops reading embedded options at the first line that is neither blank nor a comment;
    each ``#BSUB`` line is split like a command line, so quoted values keep their spaces.
    """
    options = []
    for line in script.splitlines()[1:]:
        if line.strip() and not line.startswith("#"):
            break
        if not line.startswith("#BSUB"):
            continue
        words = shlex.split(line[len("#BSUB"):])
        assert len(words) == 2, f"one option and its value per line: {line!r}"
        option, value = words
        assert option in _BSUB_VALUES, f"not a bsub option hpcbridge should write: {line!r}"
        assert _BSUB_VALUES[option].match(value), f"{option} value {value!r} is not in LSF's syntax"
        options.append((option, value))
    return options


def test_emulated_bsub_directives_follow_lsf_syntax_and_match_the_spec() -> None:
    spec = JobSpec(scheduler="lsf", nodes=3, ntasks_per_node=2, cpus_per_task=4, mem_per_cpu="2G",
                   walltime="1-00:30:00", queue="normal", account="proj1", job_name="sweep")
    options = dict(parse_bsub_directives(render_script(spec)))
    requirements = [value for option, value in parse_bsub_directives(render_script(spec)) if option == "-R"]
    assert options["-J"] == "sweep" and options["-q"] == "normal" and options["-P"] == "proj1"
    assert options["-n"] == "24"
    assert requirements == ["span[ptile=8]", "rusage[mem=2048MB]"]
    assert options["-M"] == "8192MB"
    assert options["-W"] == "24:30"
    assert options["-o"] == "sweep-%J.out"


def test_emulated_bsub_output_parsers() -> None:
    assert parse_job_id("Job <51234> is submitted to queue <normal>.") == "51234"
    with pytest.raises(ValueError):
        parse_job_id("Request aborted by esub. Job not submitted.")
    fields = parse_bjobs("RUN|-|/home/ada/sweep-51234.out|-")
    assert fields == {"stat": "RUN", "output_file": "/home/ada/sweep-51234.out"}


@pytest.fixture
def lsf_environment(tmp_path: Path) -> dict[str, str]:
    """LSF's job variables for a job on two hosts, and a ``blaunch`` that runs locally."""
    bin_dir = tmp_path / "lsf-bin"
    bin_dir.mkdir()
    blaunch = bin_dir / "blaunch"
    blaunch.write_text(
        "#!/bin/bash\n"
        "# Emulated blaunch -z \"HOSTS\" COMMAND...: start COMMAND once per listed host, here.\n"
        "[ \"$1\" = -z ] || { echo 'emulated blaunch: only -z HOSTS is supported' >&2; exit 2; }\n"
        "read -r -a hosts <<< \"$2\"; shift 2\n"
        "for host in \"${hosts[@]}\"; do LSF_EMULATED_HOST=$host \"$@\" & done\n"
        "wait\n"
    )
    blaunch.chmod(0o755)
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("hostA\nhostA\nhostB\nhostB\n")
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "LSB_JOBID": "4242",
        "LSB_HOSTS": "hostA hostA hostB hostB",
        "LSB_MCPU_HOSTS": "hostA 2 hostB 2",
        "LSB_DJOB_HOSTFILE": str(hostfile),
        "OMPI_MCA_rmaps_base_oversubscribe": "1",
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    }


def _run_emulated(script: str, environment: dict[str, str], directory: Path) -> subprocess.Popen:
    path = directory / "job.sh"
    path.write_text(script)
    return subprocess.Popen(["bash", str(path)], cwd=directory, env=environment, stdout=open(directory / "job.out", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_emulated_lsf_scheduler_file_job_starts_one_worker_per_task(lsf_environment, tmp_path) -> None:
    spec = JobSpec(scheduler="lsf", nodes=2, ntasks_per_node=2, interface="lo", python=sys.executable,
                   scheduler_file=str(tmp_path / "{job_id}.json"))
    job = _run_emulated(render_script(spec), lsf_environment, tmp_path)
    try:
        with connect(tmp_path / "4242.json", n_workers=4, timeout=90) as bridge:
            assert bridge.n_workers == 4
            assert bridge.gather(bridge.map(abs, [-1, -2])) == [1, 2]
            bridge.shutdown()
        assert job.wait(timeout=60) == 0, (tmp_path / "job.out").read_text()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, 15)
            job.wait(timeout=30)


def test_emulated_lsf_dask_mpi_job_with_mpirun(lsf_environment, tmp_path) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT_SCRIPT)
    report = tmp_path / "report.json"
    spec = JobSpec(scheduler="lsf", mode="mpi", nodes=2, ntasks_per_node=2, interface="lo", python=sys.executable,
                   scheduler_file=str(tmp_path / "{job_id}.json"), client_script=str(script),
                   client_args=(str(report),))
    job = _run_emulated(render_script(spec), lsf_environment, tmp_path)
    try:
        assert job.wait(timeout=120) == 0, (tmp_path / "job.out").read_text()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, 15)
            job.wait(timeout=30)
    assert json.loads(report.read_text())["total"] == 10218029
    assert wait_for(lambda: not (tmp_path / "4242.json").exists(), timeout=10)


def test_emulated_lsf_array_element_runs_the_script_with_its_index(tmp_path) -> None:
    script = tmp_path / "element.py"
    script.write_text("import os, sys\nprint('index', os.environ['HPCBRIDGE_ARRAY_INDEX'], sys.argv[1:])\n")
    spec = JobSpec(scheduler="lsf", mode="array", array="1-100", array_throttle=10, python=sys.executable,
                   client_script=str(script), client_args=("a b",), job_name="chunks")
    rendered = render_script(spec)
    options = parse_bsub_directives(rendered)
    assert ("-J", "chunks[1-100]%10") in options
    assert ("-o", "chunks-%J_%I.out") in options
    (tmp_path / "job.sh").write_text(rendered)
    done = subprocess.run(["bash", str(tmp_path / "job.sh")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LSB_JOBID": "77", "LSB_JOBINDEX": "42"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "index 42 ['a b']"
