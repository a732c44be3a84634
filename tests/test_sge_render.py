"""Grid Engine's scripts (``--scheduler sge``): the ``#$`` directives hpcbridge writes, the parallel
environment (``--pe``) they need, and the one-line errors for what Grid Engine cannot be asked.
The real Grid Engine reads them in tests/cluster/test_sge.py."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hpcbridge.cli import main as cli
from hpcbridge.job.adaptive import worker_job_options
from hpcbridge.job.render import render_script
from hpcbridge.job.spec import JobSpec, SpecError


def _directives(script: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith("#$")]


def test_directives_ask_for_slots_memory_per_slot_time_project_and_queue() -> None:
    spec = JobSpec(scheduler="sge", nodes=2, ntasks_per_node=3, cpus_per_task=2, mem_per_cpu="1G", walltime="2h",
                   account="p1", queue="short.q", pe="mpi", reservation="17", directives=("-l h_vmem=2G",))
    assert _directives(render_script(spec)) == [
        "#$ -N hpcbridge",
        "#$ -S /bin/bash",
        "#$ -cwd",
        "#$ -pe mpi 12",  # a slot per CPU: 2 nodes x 3 tasks x 2 CPUs
        "#$ -l mem_free=1024M",  # per slot
        "#$ -l h_rt=02:00:00",
        "#$ -P p1",
        "#$ -q short.q",
        "#$ -ar 17",
        "#$ -l h_vmem=2G",  # a site's enforced limit, given as a directive
        "#$ -j y",
    ]


def test_memory_per_node_is_split_over_its_slots_rounding_up() -> None:
    spec = JobSpec(scheduler="sge", ntasks_per_node=3, mem="1000M", pe="smp")
    assert "#$ -l mem_free=334M" in _directives(render_script(spec))


def test_one_slot_needs_no_parallel_environment_and_workers_start_with_qrsh_inherit() -> None:
    script = render_script(JobSpec(scheduler="sge"))
    assert not [line for line in _directives(script) if line.startswith("#$ -pe")]
    assert 'qrsh -inherit -nostdin -V "$host"' in script and '< "$PE_HOSTFILE"' in script


def test_array_and_mpi_modes() -> None:
    array = render_script(JobSpec(scheduler="sge", mode="array", array="1-20:2", array_throttle=4,
                                  client_script="/c.py"))
    assert "#$ -t 1-20:2" in array and "#$ -tc 4" in array and "ARRAY_INDEX=$SGE_TASK_ID" in array
    mpi = render_script(JobSpec(scheduler="sge", mode="mpi", ntasks_per_node=4, pe="mpi"))
    assert "#$ -pe mpi 4" in mpi and "mpirun " in mpi


@pytest.mark.parametrize(("values", "words"), [
    (dict(scheduler="sge", ntasks_per_node=2), "pe is missing: the Grid Engine parallel environment that gives "
                                               "the job its 2 slots"),
    (dict(scheduler="slurm", pe="mpi"), "pe: 'mpi' is not allowed; expected no pe unless scheduler is sge"),
    (dict(scheduler="sge", pe="bad name"), "pe: 'bad name' is not allowed"),
    (dict(scheduler="sge", qos="long"), "qos: 'long' is not allowed; expected no qos with Grid Engine"),
    (dict(scheduler="sge", constraint="ssd"), "constraint: 'ssd' is not allowed; expected no constraint with Grid"),
    (dict(scheduler="sge", exclusive=True), "exclusive: True is not allowed; expected no exclusive with Grid"),
    (dict(scheduler="sge", gpus_per_task=1), "gpus_per_task: 1 is not allowed; expected no gpus_per_task with Grid"),
    (dict(scheduler="sge", directives=("-pe smp 4",)), "hpcbridge sets from nodes"),
    (dict(scheduler="sge", directives=("-l h_rt=1:00:00",)), "hpcbridge sets from walltime"),
    (dict(scheduler="sge", directives=("-l mem_free=1G",)), "hpcbridge sets from mem"),
])
def test_what_grid_engine_cannot_be_asked_is_a_one_line_error(values: dict, words: str) -> None:
    with pytest.raises(SpecError) as raised:
        JobSpec(**values)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_command_line_accepts_sge_and_pe_and_refuses_a_missing_pe_in_one_line(tmp_path) -> None:
    runner = CliRunner()
    rendered = runner.invoke(cli, ["render", "--scheduler", "sge", "-N", "2", "--pe", "mpi", "--mem-per-cpu", "1G"])
    assert rendered.exit_code == 0, rendered.output
    assert "#$ -pe mpi 2" in rendered.output
    refused = runner.invoke(cli, ["render", "--scheduler", "sge", "-N", "2", "-o", str(tmp_path / "job.sh")])
    assert refused.exit_code == 2
    assert "--pe is missing" in refused.output and "Traceback" not in refused.output
    assert not (tmp_path / "job.sh").exists()


def test_site_profile_sets_the_parallel_environment(monkeypatch) -> None:
    import dask.config

    with dask.config.set({"hpcbridge.sge.pe": "orte", "hpcbridge.sge.queue": "all.q"}):
        spec = JobSpec.from_config({"scheduler": "sge", "nodes": 2})
    assert (spec.pe, spec.queue) == ("orte", "all.q")
    with dask.config.set({"hpcbridge.sge.pe": "no good"}), pytest.raises(SpecError) as raised:
        JobSpec.from_config({"scheduler": "sge", "nodes": 2})
    assert "hpcbridge.sge.pe" in str(raised.value)


def test_adaptive_worker_jobs_ask_for_the_same_slots_and_memory() -> None:
    options = worker_job_options(JobSpec(scheduler="sge", ntasks_per_node=2, cpus_per_task=2, mem_per_cpu="1G",
                                         pe="smp", account="p1", walltime="1h"))
    assert options["resource_spec"] == "mem_free=1024M"
    assert options["job_extra_directives"][:2] == ["-S /bin/bash", "-pe smp 4"]
    assert (options["project"], options["walltime"]) == ("p1", "01:00:00")
