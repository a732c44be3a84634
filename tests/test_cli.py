"""The hpcbridge command: clear one-line errors, no half-written files, no job from bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import job_processes, wait_for


def hpcbridge(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed command line the way a user does."""
    return subprocess.run([sys.executable, "-m", "hpcbridge.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@pytest.mark.parametrize(
    ("args", "option", "value"),
    [
        (["--nodes", "0"], "--nodes", "'0'"),
        (["--cpus-per-task", "many"], "--cpus-per-task", "'many'"),
        (["--mem-per-cpu", "4Q"], "--mem-per-cpu", "'4Q'"),
        (["--walltime", "10:75"], "--walltime", "'10:75'"),
        (["--partition", "a b"], "--partition", "'a b'"),
        (["--job-name", "x;reboot"], "--job-name", "'x;reboot'"),
        (["--interface", "eth0/1"], "--interface", "'eth0/1'"),
        (["--module", "gcc 12"], "--module", "'gcc 12'"),
        (["--scheduler-file", "/tmp/{user}.json"], "--scheduler-file", "'/tmp/{user}.json'"),
        (["--protocol", "http"], "--protocol", "'http'"),
        (["--scheduler", "condor"], "--scheduler", "'condor'"),
    ],
)
def test_bad_values_get_one_line_naming_the_option_and_write_nothing(
    args: list[str], option: str, value: str, tmp_path: Path
) -> None:
    target = tmp_path / "job.sh"
    done = hpcbridge("render", "--scheduler", "slurm", *args, "-o", str(target))
    assert done.returncode == 2
    error_lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1, done.stderr
    assert option in error_lines[0] and value in error_lines[0]
    assert "Traceback" not in done.stderr
    assert not target.exists()


def test_render_prints_or_writes_the_same_script(tmp_path: Path) -> None:
    args = ["--scheduler", "slurm", "--nodes", "2", "--ntasks-per-node", "2", "--mem-per-cpu", "1G",
            "--interface", "ib0", "--module", "gcc/12", "--module", "python/3.11"]
    printed = hpcbridge("render", *args)
    assert printed.returncode == 0, printed.stderr
    written = hpcbridge("render", *args, "-o", str(tmp_path / "job.sh"))
    assert written.returncode == 0
    assert (tmp_path / "job.sh").read_text() == printed.stdout
    assert os.access(tmp_path / "job.sh", os.X_OK)
    assert "module load gcc/12 python/3.11" in printed.stdout


def test_submit_with_a_bad_value_submits_nothing(hpcbridge_home: Path) -> None:
    done = hpcbridge("submit", "--scheduler", "local", "--ntasks-per-node", "0")
    assert done.returncode == 2 and "--ntasks-per-node" in done.stderr
    assert not (hpcbridge_home / "local").exists()


def test_submit_status_and_cancel_a_local_job(tmp_path: Path) -> None:
    submitted = hpcbridge("submit", "--scheduler", "local", "--python", sys.executable,
                          "--scheduler-file", str(tmp_path / "{job_id}.json"), "--json")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    try:
        assert job["scheduler"] == "local"
        assert job["scheduler_file"] == str(tmp_path / f"{job['job_id']}.json")
        assert wait_for(lambda: Path(job["scheduler_file"]).exists(), timeout=60)
        attached = hpcbridge("connect", job["scheduler_file"], "--workers", "1", "--timeout", "60")
        assert attached.returncode == 0, attached.stderr
        assert "workers:   1 (1 threads)" in attached.stdout
        status = json.loads(hpcbridge("status", job["job_id"], "--json").stdout)
        assert status["state"] == "RUNNING" and status["finished"] is False
        output = hpcbridge("logs", job["job_id"], "--tail", "50")
        assert output.returncode == 0 and "hpcbridge: scheduler file ready" in output.stdout
        assert len(output.stdout.splitlines()) <= 50
    finally:
        cancelled = hpcbridge("cancel", job["job_id"])
    assert cancelled.returncode == 0
    assert wait_for(lambda: "CANCELLED" in hpcbridge("status", job["job_id"]).stdout, timeout=30)
    assert wait_for(lambda: not job_processes(job["job_id"]), timeout=30)


def test_unknown_jobs_are_a_clear_error() -> None:
    done = hpcbridge("status", "local-00000000")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: no local job 'local-00000000'")
    assert "Traceback" not in done.stderr


def test_connect_to_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    done = hpcbridge("connect", str(tmp_path / "nothing.json"), "--timeout", "1")
    assert done.returncode == 1
    assert "no scheduler file at" in done.stderr and "Traceback" not in done.stderr


def test_submit_without_python_uses_the_interpreter_running_hpcbridge(tmp_path: Path) -> None:
    """From a venv, the job's Python is the venv's (PATH's python3 here lacks distributed)."""
    submitted = hpcbridge("submit", "--scheduler", "local", "--scheduler-file", str(tmp_path / "{job_id}.json"),
                          "--json")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    try:
        assert f"PYTHON=({sys.executable})" in (Path(os.environ["HPCBRIDGE_HOME"]) / "local" / job["job_id"]
                                              / "job.sh").read_text()
        attached = hpcbridge("connect", job["scheduler_file"], "--workers", "1", "--timeout", "60")
        assert attached.returncode == 0, attached.stderr + hpcbridge("logs", job["job_id"]).stdout
    finally:
        hpcbridge("cancel", job["job_id"])
    assert wait_for(lambda: not job_processes(job["job_id"]), timeout=30)


def test_a_python_without_distributed_fails_the_job_before_dask_starts_and_status_says_so(tmp_path: Path) -> None:
    bare = "/usr/bin/python3"
    if subprocess.run([bare, "-c", "import distributed"], capture_output=True).returncode == 0:
        pytest.skip(f"{bare} has distributed on this machine")
    submitted = hpcbridge("submit", "--scheduler", "local", "--python", bare,
                          "--scheduler-file", str(tmp_path / "{job_id}.json"), "--json")
    job = json.loads(submitted.stdout)
    assert wait_for(lambda: "FAILED" in hpcbridge("status", job["job_id"]).stdout, timeout=30)
    status = hpcbridge("status", job["job_id"]).stdout
    assert f"the job said: the job's Python ({bare}) cannot import distributed: ModuleNotFoundError" in status
    log = hpcbridge("logs", job["job_id"]).stdout
    assert "cannot import distributed" in log and "waiting for the Dask scheduler" not in log
    assert not Path(job["scheduler_file"]).exists()
    assert wait_for(lambda: not job_processes(job["job_id"]), timeout=30)


def test_every_command_help_shows_examples_of_itself() -> None:
    from click.testing import CliRunner

    from hpcbridge.cli import main

    runner = CliRunner()
    for name in ["", *main.commands]:
        shown = runner.invoke(main, [*([name] if name else []), "--help"])
        assert shown.exit_code == 0, (name, shown.output)
        examples = shown.output.split("Examples:\n", 1)
        assert len(examples) == 2, f"hpcbridge {name} --help has no examples"
        assert f"hpcbridge {name}".strip() in examples[1], name


def test_a_mistyped_option_suggests_the_nearest_one_only() -> None:
    done = hpcbridge("render", "--ntask", "2")
    assert done.returncode == 2
    assert "Did you mean '--ntasks'?" in done.stderr
    assert "--tls-key" not in done.stderr


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version_answers_to_both_spellings(flag: str) -> None:
    from hpcbridge import __version__

    done = hpcbridge(flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(__version__)


@pytest.mark.parametrize("command", ["status", "logs", "cancel"])
def test_a_job_id_no_record_and_no_batch_system_know_is_one_line(command: str) -> None:
    """Without a record of the job (which says its batch system) and without --scheduler, nothing is assumed."""
    done = hpcbridge(command, "99999")
    assert done.returncode == 1
    assert done.stderr.startswith("Error: no job 99999 known:"), done.stderr
    assert len(done.stderr.splitlines()) == 1 and "scontrol" not in done.stderr


def test_status_and_logs_ask_the_batch_system_a_jobs_record_names(hpcbridge_home: Path) -> None:
    """A record under the state home says which batch system a job went to; status and logs ask that one."""
    (hpcbridge_home / "submitted").mkdir(mode=0o700, parents=True)
    (hpcbridge_home / "submitted" / "local-99998.json").write_text(
        json.dumps({"job_id": "99998", "scheduler": "local", "scheduler_file": None}))
    done = hpcbridge("status", "99998")
    assert done.stderr.startswith("Error: no local job '99998'"), done.stderr
    done = hpcbridge("logs", "99998")
    assert done.stderr.startswith("Error: no local job '99998'"), done.stderr


def test_up_on_its_defaults_says_which_batch_system_to_name() -> None:
    """The adaptive cluster submits worker jobs: with no batch system given or configured, one line says what to pass."""
    done = hpcbridge("up", "--adapt", "0:2")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [errors[0]] and errors[0].startswith("Error: --scheduler is missing: slurm, pbs, lsf or sge"), done.stderr
    assert "'local' is not allowed" not in done.stderr


def test_up_help_offers_only_what_up_accepts() -> None:
    shown = hpcbridge("up", "--help").stdout
    assert "[slurm|pbs|lsf|sge]" in shown and "local|ssh" not in shown
    assert "[tcp|tls]" in shown and "ucx" not in shown
    offered = set()
    for line in shown.splitlines():
        for word in line.split() if line.startswith("  -") else []:
            if not word.startswith("-"):
                break
            offered.add(word.rstrip(","))
    assert "--adapt" in offered and "--ntasks-per-node" in offered
    for refused in ("--mode", "--array", "--client-script", "--hostfile", "--ssh-options", "--nodes"):
        assert refused not in offered, refused
    refused = hpcbridge("up", "--scheduler", "local", "--adapt", "0:2")
    assert refused.returncode == 2 and "'local' is not one of 'slurm', 'pbs', 'lsf', 'sge'" in refused.stderr


def test_matlab_path_prints_the_toolbox_folder_or_copies_it(tmp_path: Path) -> None:
    shown = hpcbridge("matlab-path")
    assert shown.returncode == 0, shown.stderr
    assert (Path(shown.stdout.strip()) / "+hpcbridge" / "connect.m").is_file()
    copied = hpcbridge("matlab-path", "--copy-to", str(tmp_path / "toolbox"))
    assert copied.returncode == 0 and copied.stdout.strip() == str(tmp_path / "toolbox")
    assert (tmp_path / "toolbox" / "+hpcbridge" / "connect.m").is_file()
    again = hpcbridge("matlab-path", "--copy-to", str(tmp_path / "toolbox"))
    assert again.returncode == 2 and "exists already" in again.stderr


def test_setup_that_activates_an_environment_the_job_does_not_run_is_warned_of() -> None:
    """The job runs PYTHON (the Python running hpcbridge unless --python): an activated venv's Python is not used."""
    warned = hpcbridge("render", "--scheduler", "slurm", "--setup", "source ~/venvs/dask/bin/activate")
    assert warned.returncode == 0, warned.stderr
    assert ("Warning: --setup 'source ~/venvs/dask/bin/activate' activates an environment, but the job runs --python "
            f"{sys.executable}") in warned.stderr
    assert "pass --python with its interpreter, e.g. ~/venvs/dask/bin/python" in warned.stderr
    named = hpcbridge("render", "--scheduler", "slurm", "--setup", "source ~/venvs/dask/bin/activate",
                      "--python", "/usr/bin/python3")
    assert named.returncode == 0 and "activates an environment" not in named.stderr
