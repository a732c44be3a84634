"""Every bad input is one line naming the option or argument as typed, the value as given and what is allowed.

And nothing happens: no traceback, no file written, no job submitted (a recording ``sbatch``,
``qsub`` and ``bsub`` stand first on PATH; the local backend's job folder stays absent and no
process of a local job starts), no task reaches the cluster.
"""

from __future__ import annotations

import itertools
import math
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcbridge.cli import main
from hpcbridge.client import matlab
from hpcbridge.client.arguments import ArgumentError
from hpcbridge.client.bridge import Bridge, connect
from hpcbridge.cluster.broadcasts import Broadcast
from hpcbridge.job.spec import JobSpec, SpecError
from tests.conftest import module_local_job
from tests.scheduler_probes import task_and_client_counts

# (arguments after the command, the option as the user typed it, the value as given, a piece of what is allowed)
CLI_CASES = [
    (["--nodes", "0"], "--nodes", "0", "a whole number from 1"),
    (["-N", "-1"], "-N", "-1", "a whole number from 1"),
    (["--nodes", "1.5"], "--nodes", "1.5", "a whole number"),
    (["--nodes", "9" * 30], "--nodes", "9" * 30, "a whole number from 1 to 100000"),
    (["--nodes", ""], "--nodes", "", "a whole number"),
    (["--nodes", "٣"], "--nodes", "٣", "a whole number"),
    (["--ntasks-per-node", "5000"], "--ntasks-per-node", "5000", "to 4096"),
    (["-c", "0"], "-c", "0", "a whole number from 1"),
    (["--cpus-per-task", "many"], "--cpus-per-task", "many", "a whole number"),
    (["--mem-per-cpu", "4Q"], "--mem-per-cpu", "4Q", "a size such as"),
    (["--mem-per-cpu", "0"], "--mem-per-cpu", "0", "a size such as"),
    (["--mem", "9" * 30 + "T"], "--mem", "9" * 30 + "T", "to 1024T"),
    (["--mem", "-1G"], "--mem", "-1G", "a size such as"),
    (["--mem", "４G"], "--mem", "４G", "a size such as"),
    (["--mem", "4G", "--mem-per-cpu", "4G"], "--mem", "4G", "--mem-per-cpu (per CPU), not both"),
    (["--walltime", "10:75"], "--walltime", "10:75", "25:00 (MM:SS)"),
    (["--time", "30s"], "--time", "30s", "from 1 minute"),
    (["-t", "366d"], "-t", "366d", "to 365 days"),
    (["--walltime", "1.5h"], "--walltime", "1.5h", "2h30m"),
    (["--walltime", ""], "--walltime", "", "a time such as"),
    (["--time", "1h;reboot"], "--time", "1h;reboot", "a time such as"),
    (["--lifetime-margin", "10s"], "--lifetime-margin", "10s", "at least 30 s"),
    (["--lifetime-margin", "5x"], "--lifetime-margin", "5x", "a duration such as 30s"),
    (["--lifetime-margin", "-30s"], "--lifetime-margin", "-30s", "at least 30 s"),
    (["--scheduler", "condor"], "--scheduler", "condor", "slurm"),
    (["--scheduler", ""], "--scheduler", "", "slurm"),
    (["--mode", "array"], "--array", None, "--mode array needs --array"),
    (["--mode", "array", "--array", "1-4"], "--client-script", None, "--mode array needs --array"),
    (["--mode", "array", "--array", "5-1", "--client-script", "/c.py"], "--array", "5-1", "LAST >= FIRST"),
    (["--mode", "array", "--array", "1-4", "--client-script", "/c.py", "--array-throttle", "0"],
     "--array-throttle", "0", "a whole number from 1"),
    (["--array", "1-4"], "--array", "1-4", "unless --mode is array"),
    (["--mode", "mpi", "--ntasks-per-node", "1"], "--ntasks-per-node", "1", "at least 2 tasks"),
    (["--protocol", "tls", "--tls-ca-file", "/ca.pem"], "--tls-cert", None, "give all three of --tls-ca-file"),
    (["--protocol", "http"], "--protocol", "http", "tcp"),
    (["--dashboard-address", "8787"], "--dashboard-address", "8787", "HOST:PORT such as 127.0.0.1:0"),
    (["--dashboard-address", "node1:70000"], "--dashboard-address", "node1:70000", "PORT from 0"),
    (["--protocol", "tcp", "--tls-cert", "/c.pem"], "--tls-cert", "/c.pem", "unless --protocol is tls"),
    (["--account", "proj; rm -rf ~"], "--account", "proj; rm -rf ~", "letters, digits"),
    (["-A", "proj$(id)"], "-A", "proj$(id)", "letters, digits"),
    (["--account", ""], "--account", "", "letters, digits"),
    (["--partition", "a b"], "--partition", "a b", "letters, digits"),
    (["-p", "debug,"], "-p", "debug,", "separated by commas"),
    (["--queue", "q\n#SBATCH --mem=1T"], "--queue", "q\n#SBATCH --mem=1T", "letters, digits"),
    (["--job-name", "x`id`"], "--job-name", "x`id`", "letters, digits"),
    (["-J", "café"], "-J", "café", "letters, digits"),
    (["--job-name", "../../etc/x"], "--job-name", "../../etc/x", "letters, digits"),
    (["--interface", "eth0/1"], "--interface", "eth0/1", "a network interface name"),
    (["--interface", "then"], "--interface", "then", "not a word of the shell's syntax"),
    (["--interface", "ib0\n"], "--interface", "ib0\n", "a network interface name"),
    (["--scheduler-interface", "'eth0'"], "--scheduler-interface", "'eth0'", "a network interface name"),
    (["--module", "gcc 12"], "--module", "gcc 12", "module names"),
    (["--module", "gcc/12; reboot"], "--module", "gcc/12; reboot", "module names"),
    (["--module", "a/../../x"], "--module", "a/../../x", "no .. step"),
    (["--setup", 'echo "unclosed'], "--setup", 'echo "unclosed', "one complete shell command"),
    (["--setup", "cat <<EOF"], "--setup", "cat <<EOF", "no heredoc"),
    (["--setup", "echo a\necho b"], "--setup", "echo a\necho b", "one non-empty line"),
    (["--setup", "}"], "--setup", "}", "one complete shell command"),
    (["--setup", ""], "--setup", "", "one non-empty line"),
    (["--setup", "module load x \\"], "--setup", "module load x \\", "no trailing backslash"),
    (["--python", "python3; touch /tmp/x"], "--python", "python3; touch /tmp/x", "an interpreter's name"),
    (["--python", "$(touch /tmp/x)"], "--python", "$(touch /tmp/x)", "an interpreter's name"),
    (["--python", "`id`"], "--python", "`id`", "an interpreter's name"),
    (["--python", ""], "--python", "", "one non-empty line"),
    (["--python", "/opt/py/bin/python\x1b[2J"], "--python", "/opt/py/bin/python\x1b[2J", "printable"),
    (["--python", "~bob/venv/bin/python"], "--python", "~bob/venv/bin/python", "not another user's"),
    (["--scheduler-file", "/tmp/{user}.json"], "--scheduler-file", "/tmp/{user}.json", "{job_id}"),
    (["--scheduler-file", "~bob/f.json"], "--scheduler-file", "~bob/f.json", "not another user's"),
    (["--scheduler-file", "~/../bob/f.json"], "--scheduler-file", "~/../bob/f.json", ".. leads out of it"),
    (["--scheduler-file", "/tmp/dir/"], "--scheduler-file", "/tmp/dir/", "a file path"),
    (["--scheduler-file", "$SCRATCH/{job_id}.json"], "--scheduler-file", "$SCRATCH/{job_id}.json",
     "$VARIABLES and `commands` are not expanded"),
    (["--mode", "mpi", "--ntasks-per-node", "3", "--client-script", "/c.py", "--client-arg", "`id`"],
     "--client-arg", "`id`", "not expanded"),
    (["--scheduler-file", "/tmp/a\u2028b.json"], "--scheduler-file", "/tmp/a\u2028b.json", "printable"),
    (["--mode", "mpi", "--ntasks-per-node", "3", "--client-script", "~bob/x.py"], "--client-script", "~bob/x.py",
     "not another user's"),
    (["--mode", "mpi", "--ntasks-per-node", "3", "--client-script", "/c.py", "--client-arg", "a\nb"],
     "--client-arg", "a\nb", "one non-empty line"),
    (["--client-script", "/c.py"], "--client-script", "/c.py", "unless --mode is mpi or array"),
    (["--ntasks", "5", "-N", "2"], "--ntasks", "5", "a multiple of -N (2)"),
    (["-n", "0"], "-n", "0", "a whole number from 1"),
    (["--ntasks", "8", "--ntasks-per-node", "2"], "--ntasks", "8", "give one of --ntasks and --ntasks-per-node"),
    (["--pbs-flavor", "sge"], "--pbs-flavor", "sge", "pbspro"),
    (["--scheduler", "local", "--nodes", "2"], "--nodes", "2", "1 with --scheduler local"),
    (["--scheduler", "local", "--mode", "array", "--array", "1-4", "--client-script", "/c.py"], "--mode", "array",
     "scheduler-file with --scheduler local"),
    (["--qos", "a b"], "--qos", "a b", "letters, digits"),
    (["--reservation", "r;1"], "--reservation", "r;1", "letters, digits"),
    (["--gpus-per-task", "0"], "--gpus-per-task", "0", "a whole number from 1"),
    (["--gpus-per-node", "two"], "--gpus-per-node", "two", "a whole number from 1"),
    (["--scheduler", "slurm", "--gpus-per-task", "1", "--gpus-per-node", "2"], "--gpus-per-node", "2", "either --gpus-per-task or"),
    (["--scheduler", "slurm", "--constraint", "ssd;reboot"], "--constraint", "ssd;reboot", "as sbatch --constraint"),
    (["--scheduler", "pbs", "--constraint", "ssd|avx2"], "--constraint", "ssd|avx2", "node features joined by &"),
    (["--scheduler", "lsf", "--qos", "long"], "--qos", "long", "no --qos with LSF"),
    (["--scheduler", "local", "--qos", "long"], "--qos", "long", "unless --scheduler is slurm, pbs, lsf or sge"),
    (["--scheduler", "local", "--gpus-per-node", "1"], "--gpus-per-node", "1", "unless --scheduler is slurm"),
    (["--scheduler", "local", "--directive", "--x"], "--directive", "--x", "unless --scheduler is slurm, pbs, lsf or sge"),
    (["--scheduler", "pbs", "--reservation", "R1", "--queue", "q"], "--reservation", "R1", "a PBS Pro reservation"),
    (["--directive", "--comment=x\n#SBATCH --mem=1T"], "--directive", "--comment=x\n#SBATCH --mem=1T",
     "one directive line"),
    (["--directive", "--comment=a\u2028b"], "--directive", "--comment=a\u2028b", "one directive line"),
    (["--directive", ""], "--directive", "", "one directive line"),
    (["--directive", "#SBATCH --qos=x"], "--directive", "#SBATCH --qos=x", "without its prefix"),
    (["--directive", "--comment=$(id)"], "--directive", "--comment=$(id)", "no quotes, backslashes, $"),
    (["--directive", "--comment='unclosed"], "--directive", "--comment='unclosed", "one directive line"),
    (["--directive", "qos=x"], "--directive", "qos=x", "it starts with an option"),
    (["--scheduler", "slurm", "--qos", "y", "--directive", "--qos=x"], "--directive", "--qos=x",
     "does not set what --qos ('y') sets"),
    (["--scheduler", "slurm", "--directive", "--time=10"], "--directive", "--time=10",
     "hpcbridge sets from --walltime"),
    (["--scheduler", "slurm", "--directive", "--partition=debug"], "--directive", "--partition=debug",
     "hpcbridge sets from --queue"),
    (["--scheduler", "pbs", "--directive", "-l walltime=1:00:00"], "--directive", "-l walltime=1:00:00",
     "hpcbridge sets from --walltime"),
    (["--scheduler", "lsf", "--directive", "-P proj"], "--directive", "-P proj", "hpcbridge sets from --account"),
    (["--scheduler", "slurm", "--directive", "-N 4"], "--directive", "-N 4", "hpcbridge sets from --nodes"),
    (["--python", "python3 'unclosed"], "--python", "python3 'unclosed", "or a command line"),
    (["--python", "apptainer exec $IMG python3"], "--python", "apptainer exec $IMG python3", "no $ or `"),
    (["--local-directory", "$TMPDIR/x"], "--local-directory", "$TMPDIR/x", "not expanded"),
    (["--local-directory", "~bob/x"], "--local-directory", "~bob/x", "not another user's"),
]

_FAKE_BATCH = '#!/bin/sh\necho "$0 $*" >> "$HPCBRIDGE_FAKE_LOG"\necho 4242\n'


@pytest.fixture
def fake_batch_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """sbatch, qsub and bsub that only record that they were called; the log file is returned."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("sbatch", "qsub", "bsub"):
        (folder / name).write_text(_FAKE_BATCH)
        (folder / name).chmod(stat.S_IRWXU)
    log = tmp_path / "submitted.log"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HPCBRIDGE_FAKE_LOG", str(log))
    return log


def local_job_processes(home: Path) -> list[int]:
    """Live processes that a local job under ``home`` started (its HPCBRIDGE_HOME and a job id)."""
    marker = f"HPCBRIDGE_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environment = (entry / "environ").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if marker in environment and any(item.startswith(b"HPCBRIDGE_JOB_ID=") for item in environment):
            found.append(int(entry.name))
    return found


def assert_one_line_error(stderr: str, option: str, value: str | None, allowed: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, stderr
    [line] = errors
    assert "Traceback" not in stderr
    if value is None:  # a missing option: named, with the one that needs it
        assert f"Error: {option} is missing" in line, line
    elif "\n" in value:  # the value is shown as Python writes it, newline escaped, so the error stays one line
        assert option in line and repr(value) in line, line
    else:
        assert option in line and (repr(value) in line or f"{value!r}".replace("'", '"') in line), line
    assert allowed in line, line


def _cases(cases):
    return pytest.mark.parametrize(("args", "option", "value", "allowed"), cases,
                                   ids=[f"{index}:{' '.join(case[0])[:40]!r}" for index, case in enumerate(cases)])


@_cases(CLI_CASES)
def test_render_refuses_bad_options_and_writes_nothing(args, option, value, allowed, tmp_path: Path) -> None:
    target = tmp_path / "job.sh"
    scheduler = [] if "--scheduler" in args else ["--scheduler", "slurm"]
    done = CliRunner().invoke(main, ["render", *scheduler, *args, "-o", str(target)])
    assert done.exit_code == 2, done.output
    assert_one_line_error(done.stderr, option, value, allowed)
    assert not target.exists() and list(tmp_path.iterdir()) == []


@_cases(CLI_CASES)
def test_submit_refuses_bad_options_and_submits_nothing(args, option, value, allowed, fake_batch_commands: Path,
                                                        hpcbridge_home: Path) -> None:
    runner = CliRunner()
    for scheduler in ((["--scheduler", "slurm"], ["--scheduler", "pbs"], ["--scheduler", "lsf"],
                       ["--scheduler", "local"]) if "--scheduler" not in args else ([],)):
        if scheduler == ["--scheduler", "local"] and {"-N", "--nodes", "--mode"} & set(args):
            continue  # local runs one node and no mpi: these would be refused for that reason instead
        done = runner.invoke(main, ["submit", *scheduler, *args])
        assert done.exit_code == 2, (scheduler, done.output)
        assert_one_line_error(done.stderr, option, value, allowed)
    assert not fake_batch_commands.exists(), fake_batch_commands.read_text()
    assert not (hpcbridge_home / "local").exists()
    assert local_job_processes(hpcbridge_home) == []


def hpcbridge(*args: str, **environment: str) -> subprocess.CompletedProcess[str]:
    """The real command line in its own process, as a user's shell runs it."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}
    return subprocess.run([sys.executable, "-m", "hpcbridge.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**clean, **environment})


def test_the_real_command_line_says_the_same_without_a_traceback(tmp_path: Path) -> None:
    done = hpcbridge("render", "--scheduler", "slurm", "--python", "python3; touch /tmp/x", "-o", str(tmp_path / "j"))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "--python", "python3; touch /tmp/x", "an interpreter's name")
    assert list(tmp_path.iterdir()) == []


def test_a_bad_profile_value_names_the_key_and_where_it_is_set(tmp_path: Path) -> None:
    done = hpcbridge("render", "--scheduler", "slurm", DASK_HPCBRIDGE__SLURM__WALLTIME="10:75")
    assert done.returncode == 2
    assert_one_line_error(done.stderr, "hpcbridge.slurm.walltime (from the environment variable "
                          "DASK_HPCBRIDGE__SLURM__WALLTIME)", "10:75", "a time such as")
    (tmp_path / "site.yaml").write_text("hpcbridge:\n  pbs:\n    modules: [gcc/12, 'x; reboot']\n")
    done = hpcbridge("render", "--scheduler", "pbs", "--module", "mine/1", DASK_CONFIG=str(tmp_path))
    assert_one_line_error(done.stderr, f"hpcbridge.pbs.modules in {tmp_path / 'site.yaml'}", "x; reboot",
                          "module names")


def test_options_before_the_command_get_a_hint() -> None:
    done = hpcbridge("--scheduler", "slurm", "submit")
    assert done.returncode == 2
    [line] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert "--scheduler" in line and "options go after the command: hpcbridge submit --scheduler" in line


def test_an_unwritable_output_names_the_users_path() -> None:
    done = hpcbridge("render", "-o", "/nonexistent/dir/x.sh")
    assert done.returncode == 1
    assert done.stderr == "Error: /nonexistent/dir/x.sh: No such file or directory\n"


def test_a_reader_that_stops_early_gets_no_broken_pipe_error() -> None:
    process = subprocess.Popen([sys.executable, "-m", "hpcbridge.cli", "render", "--scheduler", "slurm"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()  # as `| head -0` does, before the script is printed
    _, stderr = process.communicate(timeout=120)
    assert stderr == b"" and process.returncode in (0, 1)


# --- The Python API -----------------------------------------------------------------------------

# (keywords for JobSpec, the field the error names, the value as given)
SPEC_CASES = [
    ({"walltime": 30}, "walltime", 30),  # an int is seconds: 30 s is too short
    ({"walltime": True}, "walltime", True),
    ({"walltime": 2.5}, "walltime", 2.5),
    ({"mem": 0}, "mem", 0),
    ({"mem": True}, "mem", True),
    ({"mem_per_cpu": 2**40}, "mem_per_cpu", 2**40),
    ({"nodes": 2.5}, "nodes", 2.5),
    ({"nodes": "2 "}, None, None),  # accepted: spaces around a number are fine
    ({"nodes": 10**30}, "nodes", 10**30),
    ({"cpus_per_task": None}, "cpus_per_task", None),
    ({"modules": 5}, "modules", 5),
    ({"setup": ["export A=1", 5]}, "setup", 5),
    ({"python": None}, "python", None),
    ({"python": "py thon"}, None, None),  # accepted: a command line, the program py with the argument thon
    ({"python": []}, "python", []),
    ({"python": ("python3", 3)}, "python", ("python3", 3)),
    ({"gpus_per_task": True}, "gpus_per_task", True),
    ({"directives": 5}, "directives", 5),
    ({"directives": ["--x", "-l a\x00b"]}, "directives", "-l a\x00b"),
    ({"exclusive": "sometimes"}, "exclusive", "sometimes"),
    ({"scheduler": None}, "scheduler", None),
    ({"scheduler_file": None}, "scheduler_file", None),
    ({"scheduler_file": "~root/x.json"}, "scheduler_file", "~root/x.json"),
    ({"ntasks": 6, "nodes": 4}, "ntasks", 6),
    ({"ntasks": "x"}, "ntasks", "x"),
    ({"lifetime_margin": 10}, "lifetime_margin", 10),
    ({"lifetime_margin": "10s"}, "lifetime_margin", "10s"),
    ({"lifetime_margin": None}, "lifetime_margin", None),
    ({"client_args": ["ok", "a\x00b"], "mode": "mpi", "ntasks_per_node": 3, "client_script": "/c.py"},
     "client_args", "a\x00b"),
    ({"array": "1-4\n", "mode": "array", "client_script": "/c.py"}, "array", "1-4\n"),
    ({"scheduler_timeout": 1}, "scheduler_timeout", 1),
]


@pytest.mark.parametrize(("values", "field", "value"), SPEC_CASES, ids=[str(case[0])[:50] for case in SPEC_CASES])
def test_jobspec_refuses_bad_keywords_naming_them(values: dict, field: str | None, value: object) -> None:
    if field is None:
        JobSpec(**{"scheduler": "slurm", **values})
        return
    with pytest.raises(SpecError) as caught:
        JobSpec(**{"scheduler": "slurm", **values})
    error = caught.value
    assert error.field == field
    assert error.value is value or error.value == value
    message = str(error)
    assert "\n" not in message and message.startswith(f"{field}: {value!r}" if value is not None else field)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One local job with one worker for the module; its scheduler file's path."""
    with module_local_job(tmp_path_factory, workers=1) as job:
        try:
            yield job.scheduler_file
        finally:
            matlab.close(job.scheduler_file)


@pytest.fixture(scope="module")
def bridge(cluster: str) -> Iterator[Bridge]:
    with connect(cluster, n_workers=1, timeout=120) as attached:
        yield attached


LOCK = threading.Lock()  # an object pickle cannot send to a worker
ENDLESS = itertools.count()  # items without end
NEVER_SENT = Broadcast.named("never-broadcast")  # a handle of a broadcast the cluster does not hold


def holds_a_lock(x: int, lock: object = LOCK) -> int:
    """A function that cannot travel: it is shipped by value, and its default is a lock."""
    return x


# (what to call, given the bridge and the cluster's scheduler file; the argument named; the value as given)
API_CASES = [
    (lambda b, f: connect(""), "scheduler_file", ""),
    (lambda b, f: connect(None), "scheduler_file", None),
    (lambda b, f: connect(42), "scheduler_file", 42),
    (lambda b, f: connect("~bob/scheduler.json"), "scheduler_file", "~bob/scheduler.json"),
    (lambda b, f: connect(f, n_workers=-1), "n_workers", -1),
    (lambda b, f: connect(f, n_workers=1.5), "n_workers", 1.5),
    (lambda b, f: connect(f, n_workers="2"), "n_workers", "2"),
    (lambda b, f: connect(f, n_workers=True), "n_workers", True),
    (lambda b, f: connect(f, timeout=-1), "timeout", -1),
    (lambda b, f: connect(f, timeout="60"), "timeout", "60"),
    (lambda b, f: connect(f, timeout=math.nan), "timeout", math.nan),
    (lambda b, f: connect(f, timeout=math.inf), "timeout", math.inf),
    (lambda b, f: b.map(42, [1, 2]), "fn", 42),
    (lambda b, f: b.map("abs", [1, 2]), "fn", "abs"),
    (lambda b, f: b.map("operator:neg", 5), "items", 5),
    (lambda b, f: b.map("operator:neg", "abc"), "items", "abc"),
    (lambda b, f: b.map("operator:neg", [1], name=""), "name", ""),
    (lambda b, f: b.map("operator:neg", [1], name="a\nb"), "name", "a\nb"),
    (lambda b, f: b.map("operator:neg", [1], name=5), "name", 5),
    (lambda b, f: b.map("operator:neg", [1], chunk_size=0), "chunk_size", 0),
    (lambda b, f: b.map("operator:neg", [1], chunk_size=-1), "chunk_size", -1),
    (lambda b, f: b.map("operator:neg", [1], chunk_size=2.5), "chunk_size", 2.5),
    (lambda b, f: b.map("operator:neg", [1], stack="yes"), "stack", "yes"),
    (lambda b, f: b.map("operator:neg", [1], progress=2), "progress", 2),
    (lambda b, f: b.broadcast([1, 2], name=""), "name", ""),
    (lambda b, f: b.broadcast([1, 2], name="x\ny"), "name", "x\ny"),
    (lambda b, f: b.broadcast([1, 2], name=3), "name", 3),
    (lambda b, f: b.gather(42), "run", 42),
    (lambda b, f: b.gather([], timeout=-1), "timeout", -1),
    (lambda b, f: b.gather([], timeout="x"), "timeout", "x"),
    (lambda b, f: b.gather([], stack="x"), "stack", "x"),
    (lambda b, f: b.results(None), "name", None),
    (lambda b, f: b.results(""), "name", ""),
    (lambda b, f: connect(f, run_directory=123), "run_directory", 123),
    (lambda b, f: b.map("operator:neg", [1], save="no"), "save", "no"),
    (lambda b, f: b.map("operator:neg", [1], name="../x"), "name", "../x"),
    (lambda b, f: b.map("operator:neg", ENDLESS), "items", ENDLESS),
    (lambda b, f: b.map(abs, [1, LOCK, 3]), "items[1]", LOCK),
    (lambda b, f: b.map(holds_a_lock, [1, 2]), "fn", holds_a_lock),
    (lambda b, f: b.map(max, [1, 2], args=(0, LOCK)), "args[1]", LOCK),
    (lambda b, f: b.map(max, [1, 2], args=(NEVER_SENT,)), "args[0]", NEVER_SENT),
    (lambda b, f: b.gather(["not a future"]), "run", ["not a future"]),
    (lambda b, f: b.release(None), "handle", None),
    (lambda b, f: b.release(123), "handle", 123),
    # MATLAB's entry points, with the types MATLAB passes (numbers are doubles)
    (lambda b, f: matlab.connect("", 1.0, 60.0), "scheduler_file", ""),
    (lambda b, f: matlab.connect(3.0, 1.0, 60.0), "scheduler_file", 3.0),
    (lambda b, f: matlab.connect(f, -1.0, 60.0), "n_workers", -1.0),
    (lambda b, f: matlab.connect(f, 2.5, 60.0), "n_workers", 2.5),
    (lambda b, f: matlab.connect(f, 1.0, -1.0), "timeout", -1.0),
    (lambda b, f: matlab.connect(f, 1.0, math.nan), "timeout", math.nan),
    (lambda b, f: matlab.map(f, "", (1.0,), (), "", False, 0.0), "function", ""),
    (lambda b, f: matlab.map(f, 5.0, (1.0,), (), "", False, 0.0), "function", 5.0),
    (lambda b, f: matlab.map(f, "operator:neg", "abc", (), "", False, 0.0), "items", "abc"),
    (lambda b, f: matlab.map(f, "operator:neg", (1.0,), 5.0, "", False, 0.0), "broadcasts", 5.0),
    (lambda b, f: matlab.map(f, "operator:neg", (1.0,), (), 5.0, False, 0.0), "name", 5.0),
    (lambda b, f: matlab.map(f, "operator:neg", (1.0,), (), "", "x", 0.0), "stack", "x"),
    (lambda b, f: matlab.map(f, "operator:neg", (1.0,), (), "", False, -1.0), "chunk_size", -1.0),
    (lambda b, f: matlab.map(f, "operator:neg", (1.0,), (), "", False, 1.5), "chunk_size", 1.5),
    (lambda b, f: matlab.gather(f, 5.0), "run", 5.0),
    (lambda b, f: matlab.gather(f, "", 1.0), "run", ""),
    (lambda b, f: matlab.gather(f, "r", -1.0), "timeout", -1.0),
    (lambda b, f: matlab.wait(f, "r", "soon"), "timeout", "soon"),
    (lambda b, f: matlab.broadcast(f, (1.0, 2.0), 5.0), "name", 5.0),
    (lambda b, f: matlab.runs(3.0), "cluster", 3.0),
    (lambda b, f: matlab.release("~bob/scheduler.json", "x"), "cluster", "~bob/scheduler.json"),
    (lambda b, f: matlab.release(f, 123.0), "handle", 123.0),
    (lambda b, f: matlab.map(f, "operator:neg", (1.0,), ("nope",), "", False, 0.0), "broadcasts", "nope"),
    (lambda b, f: matlab.map(f, "operator:neg", (1.0,), (), "../x", False, 0.0), "name", "../x"),
    (lambda b, f: matlab.map(f, "operator:neg", (1.0,), (), "", False, 0.0, "no"), "save", "no"),
]


def run_folders(bridge: Bridge) -> list[str]:
    """The run folders under the bridge's run directory (none when it does not exist yet)."""
    root = bridge.run_root
    return sorted(os.listdir(root)) if root and os.path.isdir(root) else []


@pytest.mark.parametrize(("call", "argument", "value"), API_CASES, ids=[f"{i}:{c[1]}" for i, c in enumerate(API_CASES)])
def test_connect_map_broadcast_gather_refuse_bad_arguments(call, argument: str, value: object, bridge: Bridge,
                                                           cluster: str) -> None:
    matlab.connect(cluster, 1.0, 60.0)  # MATLAB's own client, attached before counting clients
    before = bridge.client.run_on_scheduler(task_and_client_counts)
    folders = run_folders(bridge)
    with pytest.raises(ArgumentError) as caught:
        call(bridge, cluster)
    error = caught.value
    assert error.argument == argument
    assert error.value is value or error.value == value
    message, shown = str(error), repr(value)
    shown = shown if len(shown) <= 80 else shown[:75] + " ...>"  # a long value is cut short
    assert "\n" not in message and message.startswith(f"{argument}: {shown} is not allowed; expected ")
    assert bridge.client.run_on_scheduler(task_and_client_counts) == before  # no task, no new client
    assert bridge.runs() == [] and bridge.broadcasts() == []
    assert run_folders(bridge) == folders  # no run folder either


def test_an_endless_generator_is_refused_once_it_passes_the_bound_and_a_finite_one_is_mapped(
        bridge: Bridge, monkeypatch: pytest.MonkeyPatch) -> None:
    from hpcbridge.client import arguments

    monkeypatch.setattr(arguments, "MAX_UNSIZED_ITEMS", 1000)
    before = bridge.client.run_on_scheduler(task_and_client_counts)
    endless = (x for x in itertools.count())  # a generator has no length: it is read, up to the bound
    with pytest.raises(ArgumentError, match=r"^items: <generator object .* expected a bounded iterable: .*"
                                            r"gave more than 1,000 items without a length"):
        bridge.map(abs, endless, progress=False)
    assert next(endless) == 1001  # read no further than the bound
    assert bridge.client.run_on_scheduler(task_and_client_counts) == before and bridge.runs() == []
    assert bridge.gather(bridge.map(abs, (-x for x in range(1000)), progress=False), progress=False) == list(range(1000))


def test_the_table_holds_at_least_sixty_bad_inputs() -> None:
    assert len(CLI_CASES) + len(SPEC_CASES) - 1 + len(API_CASES) >= 60
