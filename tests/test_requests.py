"""What a job asks of its batch system (qos, node features, a reservation, whole nodes, GPUs,
any directive) is written in each system's own syntax, passes bash -n and shellcheck, reaches
adaptive worker jobs too, and can be set in the site profile."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hpcbridge.job.adaptive import AdaptiveSettings, scheduler_job_spec, worker_job_options
from hpcbridge.job.render import render_script, write_script
from hpcbridge.job.spec import JobSpec, SpecError

_ASKED = dict(ntasks_per_node=2, reservation="maint", exclusive=True, gpus_per_task=1, constraint="ssd&avx2")
SPECS = {
    "slurm": JobSpec(scheduler="slurm", qos="long", directives=("--licenses=fluent:2", '--comment "a b#c"'),
                     **_ASKED),
    "slurm-mpi": JobSpec(scheduler="slurm", mode="mpi", qos="long", **_ASKED),
    "slurm-array": JobSpec(scheduler="slurm", mode="array", array="1-4", client_script="/c.py", qos="long",
                           directives=("--licenses=fluent:2",), **_ASKED),
    "pbs": JobSpec(scheduler="pbs", directives=("-l software=abaqus",), **_ASKED),
    "pbs-torque": JobSpec(scheduler="pbs", pbs_flavor="torque", qos="long", **_ASKED),
    "lsf": JobSpec(scheduler="lsf", directives=('-R "order[r15s]"',), **_ASKED),
    "lsf-array": JobSpec(scheduler="lsf", mode="array", array="1-4", client_script="/c.py", **_ASKED),
}


def _directives(script: str, prefix: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(prefix)]


@pytest.mark.parametrize("name", sorted(SPECS))
def test_scripts_with_every_request_are_valid_bash_and_pass_shellcheck(name: str, tmp_path: Path) -> None:
    script = write_script(SPECS[name], tmp_path / "job.sh")
    subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        checked = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout


def test_slurm_writes_each_request_as_sbatch_reads_it() -> None:
    assert _directives(render_script(SPECS["slurm"]), "#SBATCH") == [
        "#SBATCH --job-name=hpcbridge",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --qos=long",
        '#SBATCH --constraint="ssd&avx2"',  # sbatch strips double quotes (not single ones)
        "#SBATCH --reservation=maint",
        "#SBATCH --exclusive",
        "#SBATCH --gpus-per-task=1",
        "#SBATCH --licenses=fluent:2",
        '#SBATCH --comment "a b#c"',  # an unquoted # would start sbatch's comment
        "#SBATCH --output=hpcbridge-%j.out",
    ]
    assert "#SBATCH --gres=gpu:4\n" in render_script(JobSpec(scheduler="slurm", gpus_per_node=4))
    array = _directives(render_script(SPECS["slurm-array"]), "#SBATCH")
    assert {"#SBATCH --qos=long", "#SBATCH --exclusive", "#SBATCH --licenses=fluent:2"} <= set(array)


def test_pbs_pro_puts_gpus_and_features_in_the_select_statement() -> None:
    assert _directives(render_script(SPECS["pbs"]), "#PBS") == [
        "#PBS -N hpcbridge",
        "#PBS -l select=1:ncpus=2:mpiprocs=2:ngpus=2:ssd=True:avx2=True",  # GPUs per node: 1 per task x 2 tasks
        "#PBS -l place=scatter:excl",
        "#PBS -q maint",  # a PBS Pro reservation is a queue
        "#PBS -l software=abaqus",
        "#PBS -j oe",
    ]


def test_torque_puts_gpus_and_features_in_the_nodes_statement() -> None:
    assert _directives(render_script(SPECS["pbs-torque"]), "#PBS") == [
        "#PBS -N hpcbridge",
        "#PBS -l nodes=1:ppn=2:gpus=2:ssd:avx2",
        "#PBS -n",
        "#PBS -l qos=long",
        "#PBS -l advres=maint",
        "#PBS -j oe",
    ]


def test_lsf_writes_select_reservation_exclusive_and_gpus_per_host() -> None:
    assert _directives(render_script(SPECS["lsf"]), "#BSUB") == [
        "#BSUB -J hpcbridge",
        "#BSUB -n 2",
        '#BSUB -R "span[ptile=2]"',
        '#BSUB -R "select[ssd && avx2]"',
        "#BSUB -U maint",
        "#BSUB -x",
        '#BSUB -gpu "num=2"',
        '#BSUB -R "order[r15s]"',
        "#BSUB -o hpcbridge-%J.out",
    ]
    assert '#BSUB -gpu "num=2"' in render_script(SPECS["lsf-array"])


def test_nothing_is_asked_unless_given() -> None:
    for scheduler, prefix in (("slurm", "#SBATCH"), ("pbs", "#PBS"), ("lsf", "#BSUB")):
        script = "\n".join(_directives(render_script(JobSpec(scheduler=scheduler)), prefix))
        for word in ("qos", "constraint", "reservation", "exclusive", "gpu", "gres", "select[", "excl", "-x", "-U"):
            assert word not in script, (scheduler, word)


def test_local_and_ssh_refuse_what_only_a_batch_system_can_give() -> None:
    for scheduler in ("local", "ssh"):
        extra = {"hosts": ("node1",)} if scheduler == "ssh" else {}
        for field, value in (("qos", "long"), ("gpus_per_node", 1), ("exclusive", True), ("directives", ("--x",))):
            with pytest.raises(SpecError, match=f"no {field} unless scheduler is slurm, pbs, lsf or sge"):
                JobSpec(scheduler=scheduler, **{field: value}, **extra)


@pytest.mark.parametrize(("values", "words"), [
    ({"scheduler": "slurm", "qos": "a", "directives": "--qos=b"}, "what qos ('a') sets"),
    ({"scheduler": "slurm", "qos": "a", "directives": "-q b"}, "what qos ('a') sets"),
    ({"scheduler": "slurm", "constraint": "ssd", "directives": "--cons=avx"}, "what constraint ('ssd') sets"),
    ({"scheduler": "slurm", "gpus_per_node": 2, "directives": "--gres=gpu:1"}, "what gpus_per_node (2) sets"),
    ({"scheduler": "slurm", "directives": "--time=10"}, "hpcbridge sets from walltime"),
    ({"scheduler": "slurm", "directives": "-p debug"}, "hpcbridge sets from queue"),
    ({"scheduler": "slurm", "directives": "--account=x"}, "hpcbridge sets from account"),
    ({"scheduler": "slurm", "directives": "-N2"}, "hpcbridge sets from nodes"),
    ({"scheduler": "pbs", "directives": "-l walltime=1:00:00"}, "hpcbridge sets from walltime"),
    ({"scheduler": "pbs", "directives": "-l select=2:ncpus=4"}, "hpcbridge sets from nodes"),
    ({"scheduler": "pbs", "exclusive": True, "pbs_flavor": "torque", "directives": "-n"}, "what exclusive (True)"),
    ({"scheduler": "lsf", "directives": "-W 60"}, "hpcbridge sets from walltime"),
    ({"scheduler": "lsf", "directives": '-R "span[hosts=1]"'}, "hpcbridge sets from nodes"),
    ({"scheduler": "lsf", "constraint": "ssd", "directives": '-R "select[avx]"'}, "what constraint ('ssd') sets"),
])
def test_a_directive_that_sets_what_an_option_sets_is_refused_naming_both(values: dict, words: str) -> None:
    with pytest.raises(SpecError) as caught:
        JobSpec(**values)
    assert caught.value.field == "directives" and words in str(caught.value), str(caught.value)


def test_a_directive_hpcbridge_has_no_option_for_is_kept_as_written() -> None:
    spec = JobSpec(scheduler="lsf", directives=['-R "select[mem>4000]"'])  # no --constraint: the line may select
    assert '#BSUB -R "select[mem>4000]"\n' in render_script(spec)


def test_adaptive_worker_jobs_ask_for_the_same_and_the_scheduler_job_for_no_gpus() -> None:
    spec = JobSpec(scheduler="slurm", mem="4G", qos="long", gpus_per_node=2, exclusive=True,
                   directives=("--licenses=fluent:2",))
    options = worker_job_options(spec)
    assert options["job_extra_directives"] == ["--qos=long", "--exclusive", "--gres=gpu:2", "--licenses=fluent:2"]
    assert options["local_directory"] == '"${TMPDIR:-${SLURM_TMPDIR:-/tmp}}"'
    scheduler_job = render_script(scheduler_job_spec(spec, AdaptiveSettings()))
    assert "#SBATCH --qos=long\n" in scheduler_job and "gres" not in scheduler_job and "exclusive" not in scheduler_job
    pbs = worker_job_options(JobSpec(scheduler="pbs", mem="4G", ntasks_per_node=2, gpus_per_task=1, constraint="ssd"))
    assert pbs["resource_spec"] == "select=1:ncpus=2:mem=4096mb:ngpus=2:ssd=True"
    assert worker_job_options(JobSpec(scheduler="slurm", mem="1G", python="apptainer exec ~/i.sif python3"))[
        "python"] == 'apptainer exec "$HOME"/i.sif python3'


def _hpcbridge(*args: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("DASK_")}
    return subprocess.run([sys.executable, "-m", "hpcbridge.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**clean, **environment})


def test_a_site_profile_sets_requests_and_directives_the_users_are_added(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text(
        "hpcbridge:\n"
        "  slurm:\n"
        "    qos: normal\n"
        "    constraint: cpu\n"
        "    exclusive: true\n"
        "    gpus-per-node: 1\n"
        "    directives: ['--licenses=scratch:1']\n"
        "    local-directory: /local/scratch\n")
    site = {"DASK_CONFIG": str(tmp_path)}
    done = _hpcbridge("render", "--scheduler", "slurm", "--directive", "--mail-type=END", environment=site)
    assert done.returncode == 0, done.stderr
    assert _directives(done.stdout, "#SBATCH")[4:-1] == [
        "#SBATCH --qos=normal", "#SBATCH --constraint=cpu", "#SBATCH --exclusive", "#SBATCH --gres=gpu:1",
        "#SBATCH --licenses=scratch:1", "#SBATCH --mail-type=END"]
    assert "    --local-directory /local/scratch\n" in done.stdout
    done = _hpcbridge("render", "--scheduler", "slurm", "--qos", "high", environment=site)
    assert "#SBATCH --qos=high\n" in done.stdout and "--qos=normal" not in done.stdout


def test_a_site_directive_that_clashes_names_the_profile_key(tmp_path: Path) -> None:
    (tmp_path / "site.yaml").write_text("hpcbridge:\n  slurm:\n    directives: ['--qos=normal']\n")
    done = _hpcbridge("render", "--scheduler", "slurm", "--qos", "high", "--directive", "--mail-type=END",
                      environment={"DASK_CONFIG": str(tmp_path)})
    assert done.returncode == 2
    [line] = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert f"hpcbridge.slurm.directives in {tmp_path / 'site.yaml'}: '--qos=normal'" in line
    assert "what --qos ('high') sets" in line
