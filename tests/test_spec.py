"""The job spec accepts what users type and rejects everything else, naming the field."""

from __future__ import annotations

import os

import pytest

from hpcbridge.job.render import render_script
from hpcbridge.job.spec import JobSpec, SpecError


def test_text_values_are_parsed_into_units() -> None:
    spec = JobSpec(scheduler="SLURM", nodes="3", ntasks_per_node="2", cpus_per_task=4,
                   mem_per_cpu="2G", walltime="1-02:00:00")
    assert (spec.scheduler, spec.nodes, spec.ntasks_per_node, spec.cpus_per_task) == ("slurm", 3, 2, 4)
    assert spec.mem_per_cpu == 2048
    assert spec.walltime == 26 * 3600
    assert spec.workers == 6


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("scheduler", "condor", "one of slurm, pbs, lsf, sge, local"),
        ("nodes", "0", "a whole number from 1"),
        ("nodes", "two", "a whole number from 1"),
        ("ntasks_per_node", -1, "a whole number from 1"),
        ("cpus_per_task", "1.5", "a whole number from 1"),
        ("mem_per_cpu", "lots", "a size such as"),
        ("mem", "0M", "a size such as"),
        ("walltime", "10:75", "a time such as"),
        ("walltime", "30s", "a time such as"),
        ("account", "proj; rm -rf ~", "letters, digits"),
        ("queue", "debug,", "letters, digits"),
        ("job_name", "", "letters, digits"),
        ("job_name", "-x", "letters, digits"),
        ("interface", "a-name-that-is-too-long", "a network interface name"),
        ("protocol", "http", "one of tcp"),
        ("dashboard_address", "8787", "HOST:PORT such as 127.0.0.1:0"),
        ("dashboard_address", "node1:65536", "PORT from 0 (any free one) to 65535"),
        ("dashboard_address", "$(id):1", "HOST:PORT"),
        ("modules", ["gcc/12; reboot"], "module names"),
        ("setup", ["echo a\necho b"], "one non-empty line"),
        ("python", "", "one non-empty line"),
        ("python", "python3; touch /tmp/x", "an interpreter's name"),
        ("scheduler_file", "/tmp/{user}.json", "{job_id}"),
        ("scheduler_file", "~other/f.json", "your own home"),
        ("scheduler_file", "/tmp/dir/", "a file path"),
    ],
)
def test_bad_values_name_the_field_the_value_and_what_is_allowed(field: str, value: object, allowed: str) -> None:
    with pytest.raises(SpecError) as caught:
        JobSpec(**{"scheduler": "slurm", field: value})
    assert caught.value.field == field
    assert caught.value.value == (value[0] if isinstance(value, list) else value)
    assert allowed in caught.value.allowed
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"mode": "array", "client_script": "/a.py"}, "array"),
        ({"mode": "array", "array": "1-4"}, "client_script"),
        ({"mode": "array", "array": "5-1", "client_script": "/a.py"}, "array"),
        ({"mode": "array", "array": "1-4:0", "client_script": "/a.py"}, "array"),
        ({"mode": "array", "array": "1,2", "client_script": "/a.py"}, "array"),
        ({"mode": "array", "array": "1-4", "client_script": "/a.py", "nodes": 2}, "nodes"),
        ({"array": "1-4"}, "array"),
        ({"mode": "mpi", "ntasks_per_node": 1}, "ntasks_per_node"),
        ({"mode": "mpi", "ntasks_per_node": 2, "client_script": "/c.py"}, "ntasks_per_node"),
        ({"client_script": "/c.py"}, "client_script"),
        ({"protocol": "tls", "tls_cert": "/c.pem", "tls_key": "/k.pem"}, "tls_ca_file"),
        ({"tls_cert": "/c.pem"}, "tls_ca_file"),
        ({"protocol": "tcp", "tls_cert": "/c.pem"}, "tls_cert"),
    ],
)
def test_mode_specific_fields_are_checked_together(values: dict, field: str) -> None:
    with pytest.raises(SpecError) as caught:
        JobSpec(scheduler="slurm", **values)
    assert caught.value.field == field


def test_mpi_and_array_counts() -> None:
    assert JobSpec(scheduler="slurm", mode="mpi", nodes=2, ntasks_per_node=4).workers == 7
    assert JobSpec(scheduler="slurm", mode="mpi", ntasks_per_node=4, client_script="/c.py").workers == 2
    spec = JobSpec(scheduler="lsf", mode="array", array="0-9:3", client_script="/c.py")
    assert list(spec.array_indices) == [0, 3, 6, 9]


def test_memory_per_node_and_per_cpu_exclude_each_other() -> None:
    with pytest.raises(SpecError, match="not both"):
        JobSpec(scheduler="slurm", mem="8G", mem_per_cpu="1G")


def test_local_scheduler_runs_one_node_on_loopback() -> None:
    with pytest.raises(SpecError) as caught:
        JobSpec(scheduler="local", nodes=2)
    assert caught.value.field == "nodes"
    assert JobSpec(scheduler="local").interface == "lo"
    assert JobSpec(scheduler="slurm").interface is None


def test_unknown_keys_list_every_known_field() -> None:
    with pytest.raises(SpecError) as caught:
        JobSpec.from_dict({"scheduler": "slurm", "nodse": 2})
    assert caught.value.field == "nodse"
    assert "nodes" in caught.value.allowed and "walltime" in caught.value.allowed
    assert str(caught.value).startswith("unknown key nodse: did you mean 'nodes'?")


def test_from_dict_ignores_unset_values() -> None:
    assert JobSpec.from_dict({"scheduler": "slurm", "nodes": None}).nodes == 1


def test_scheduler_file_resolves_relative_paths_and_the_job_id(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    spec = JobSpec(scheduler="slurm", scheduler_file="run/{job_id}.json")
    assert spec.scheduler_file == str(tmp_path / "run/{job_id}.json")
    assert spec.scheduler_file_for("77") == str(tmp_path / "run/77.json")
    monkeypatch.delenv("HPCBRIDGE_HOME")
    home_spec = JobSpec(scheduler="slurm")
    assert home_spec.scheduler_file == "~/.hpcbridge/jobs/{job_id}/scheduler.json"  # ~: the node's home
    assert home_spec.scheduler_file_for("5") == os.path.expanduser("~/.hpcbridge/jobs/5/scheduler.json")


def test_a_moved_state_home_holds_the_default_scheduler_file_and_runs_too(tmp_path, monkeypatch) -> None:
    """$HPCBRIDGE_HOME on scratch (a home directory full, slow or read-only on the nodes): the default
    scheduler file, its certificates and the runs go there, not to ~/.hpcbridge."""
    monkeypatch.setenv("HPCBRIDGE_HOME", str(tmp_path / "state"))
    spec = JobSpec(scheduler="slurm")
    assert spec.scheduler_file == str(tmp_path / "state" / "jobs" / "{job_id}" / "scheduler.json")
    assert spec.runs_directory == str(tmp_path / "state" / "jobs" / "runs")
    script = render_script(spec)
    assert f'SCHEDULER_FILE={tmp_path}/state/jobs/"$JOB_ID"/scheduler.json' in script, script
    assert ".hpcbridge" not in script


def test_single_strings_for_repeatable_fields_become_one_item() -> None:
    spec = JobSpec(scheduler="slurm", modules="gcc/12.2", setup="source ~/venv/bin/activate")
    assert spec.modules == ("gcc/12.2",)
    assert spec.setup == ("source ~/venv/bin/activate",)


def test_a_hostfile_is_one_node_per_line_repeats_and_comments_as_dask_ssh_reads_it(tmp_path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("# lab machines\nnode1\n\n127.0.0.1  # this one\nme@node2\nnode1\n")
    spec = JobSpec(scheduler="ssh", hostfile=str(hostfile), ntasks_per_node=2, ssh_options="-F '/a b/config' -o Port=2")
    assert spec.hosts == ("node1", "127.0.0.1", "me@node2", "node1")
    assert (spec.nodes, spec.workers) == (4, 8)
    assert spec.ssh_options == ("-F", "/a b/config", "-o", "Port=2")


@pytest.mark.parametrize(("values", "field", "said"), [
    ({}, "hostfile", "hostfile is missing: scheduler ssh starts its workers on a host list"),
    ({"hostfile": "/nonexistent/hosts.txt"}, "hostfile", "No such file or directory"),
    ({"hosts": ["-oProxyCommand=touch /tmp/x"]}, "hosts", "not starting with - or ."),
    ({"hosts": ["node1"], "mode": "mpi"}, "mode", "scheduler-file with scheduler ssh"),
    ({"hosts": ["node1", "node2"], "nodes": 3}, "nodes", "the number of hosts (2)"),
])
def test_bad_host_lists_are_one_line_errors(values: dict, field: str, said: str) -> None:
    with pytest.raises(SpecError) as raised:
        JobSpec(scheduler="ssh", **values)
    assert raised.value.field == field and said in str(raised.value) and "\n" not in str(raised.value)


def test_a_bad_line_of_a_hostfile_is_named_with_its_number(tmp_path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("node1\n-oProxyCommand=sh\n")
    with pytest.raises(SpecError, match=r"hosts.txt, line 2: -oProxyCommand=sh"):
        JobSpec(scheduler="ssh", hostfile=str(hostfile))


def test_host_lists_and_ssh_options_belong_to_the_ssh_scheduler() -> None:
    with pytest.raises(SpecError, match="unless scheduler is ssh"):
        JobSpec(scheduler="slurm", ssh_options="-F x")


def test_the_dashboard_listens_on_the_schedulers_node_only_unless_asked_with_a_warning() -> None:
    spec = JobSpec(scheduler="slurm")
    assert (spec.dashboard_address, spec.dashboard_loopback, spec.worker_dashboard_address) == \
        ("127.0.0.1:0", True, "127.0.0.1:0")
    assert spec.warnings() == []
    opened = JobSpec(scheduler="slurm", dashboard_address=":8787")
    assert (opened.dashboard_host, opened.worker_dashboard_address) == ("", ":0")
    [warning] = opened.warnings()
    assert warning.describe(lambda field: "--" + field.replace("_", "-")).startswith(
        "--dashboard-address :8787: the dashboard listens beyond the scheduler's node, in plain HTTP: its pages")
    assert JobSpec(scheduler="slurm", dashboard_address="localhost:8787").warnings() == []
    assert JobSpec(scheduler="slurm", mode="array", array="1-2", client_script="/c.py",
                   dashboard_address=":8787").warnings() == []  # no cluster, no dashboard


def test_a_walltime_too_short_for_the_margin_is_said_not_silently_dropped() -> None:
    (warning,) = JobSpec(scheduler="slurm", walltime="80s", lifetime_margin="30s").warnings()
    assert warning.field == "lifetime_margin" and "start leaving" in str(warning) and "80 s" in str(warning)
    assert JobSpec(scheduler="slurm", walltime="10m", lifetime_margin="30s").warnings() == []


def test_type_hints_say_which_fields_take_text_such_as_4G() -> None:
    import typing

    hints = typing.get_type_hints(JobSpec)
    for field in ("mem_per_cpu", "mem", "walltime", "nodes", "cpus_per_task", "lifetime_margin"):
        assert str in typing.get_args(hints[field]), field  # "4G", "2h30m", "5m" are accepted
