"""Rendered scripts are valid shell, pass shellcheck, carry every option, and quote every value."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hpcbridge.job import render
from hpcbridge.job.render import render_script, write_script
from hpcbridge.job.spec import JobSpec, SpecError

SPECS = {
    "slurm-minimal": JobSpec(scheduler="slurm"),
    "slurm-full": JobSpec(
        scheduler="slurm", nodes=3, ntasks_per_node=2, cpus_per_task=4, mem_per_cpu="2G",
        walltime="1-00:00:00", account="proj-42", queue="debug,long", job_name="fe-sweep",
        interface="ib0", scheduler_file="/scratch/my runs/{job_id}/scheduler.json",
        modules=("gcc/12.2", "python/3.11"), setup=("source ~/venv/bin/activate", "export OMP_NUM_THREADS=1"),
        python="/opt/py 3/bin/python",
    ),
    "slurm-mem-per-node": JobSpec(scheduler="slurm", ntasks_per_node=4, mem="64G"),
    "local-minimal": JobSpec(),
    "local-full": JobSpec(ntasks_per_node=3, cpus_per_task=2, mem="6G", python="/usr/bin/python3",
                          setup=("export A=1",), scheduler_file="~/runs/{job_id}.json"),
}
SPECS["ssh-minimal"] = JobSpec(scheduler="ssh", hosts=("node1",))
SPECS["ssh-full"] = JobSpec(scheduler="ssh", hosts=("node1", "node1", "me@node2"), ntasks_per_node=2,
                            ssh_options=("-F", "/home/a/my ssh/config", "-o", "Port=2222"), interface="ib0",
                            scheduler_interface="eth0", setup=("source ~/venv/bin/activate",), walltime="1h")
_FULL = dict(nodes=2, ntasks_per_node=3, cpus_per_task=2, mem_per_cpu="1G", walltime="2h", account="p1",
             queue="short", interface="ib0", modules=("openmpi/4.1",), setup=("source ~/env/bin/activate",))
for _scheduler in ("slurm", "pbs", "lsf"):
    for _mode in ("scheduler-file", "mpi"):
        SPECS[f"{_scheduler}-{_mode}-full"] = JobSpec(scheduler=_scheduler, mode=_mode, **_FULL)
        SPECS[f"{_scheduler}-{_mode}-minimal"] = JobSpec(scheduler=_scheduler, mode=_mode, ntasks_per_node=2)
SPECS["pbs-torque"] = JobSpec(scheduler="pbs", pbs_flavor="torque", **_FULL)
SPECS["slurm-mpi-client"] = JobSpec(scheduler="slurm", mode="mpi", ntasks_per_node=4, client_script="/home/a/run.py",
                                    client_args=("--size", "10 000"))
SPECS["slurm-tls"] = JobSpec(scheduler="slurm", protocol="tls", tls_ca_file="~/tls/ca.pem", tls_cert="~/tls/c.pem",
                             tls_key="~/tls/c.key", interface="ib0", scheduler_interface="eth0")
SPECS["lsf-ucx"] = JobSpec(scheduler="lsf", protocol="ucx", interface="ib0")
_ARRAY = dict(mode="array", array="1-20", array_throttle=4, client_script="/home/a/chunk.py", client_args=("a b",),
              mem_per_cpu="1G", walltime="1h")
for _scheduler, _flavor in (("slurm", "pbspro"), ("pbs", "pbspro"), ("pbs", "torque"), ("lsf", "pbspro")):
    SPECS[f"{_scheduler}-{_flavor}-array"] = JobSpec(scheduler=_scheduler, pbs_flavor=_flavor, **_ARRAY)
for _mode in ("scheduler-file", "mpi"):
    SPECS[f"sge-{_mode}-full"] = JobSpec(scheduler="sge", mode=_mode, pe="mpi", **_FULL)
    SPECS[f"sge-{_mode}-minimal"] = JobSpec(scheduler="sge", mode=_mode, ntasks_per_node=2, pe="smp")
SPECS["sge-array"] = JobSpec(scheduler="sge", **_ARRAY)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_scripts_are_valid_bash_and_pass_shellcheck(name: str, tmp_path: Path) -> None:
    script = write_script(SPECS[name], tmp_path / "job.sh")
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert shutil.which("shellcheck"), "shellcheck is installed by the test command (make test)"
    checked = subprocess.run(["shellcheck", "--severity=style", str(script)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout


def test_slurm_directives_carry_every_option() -> None:
    script = render_script(SPECS["slurm-full"])
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == [
        "#SBATCH --job-name=fe-sweep",
        "#SBATCH --nodes=3",
        "#SBATCH --ntasks-per-node=2",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem-per-cpu=2048M",
        "#SBATCH --time=1-00:00:00",
        "#SBATCH --account=proj-42",
        "#SBATCH --partition=debug,long",
        "#SBATCH --output=fe-sweep-%j.out",
    ]
    assert "module load gcc/12.2 python/3.11\n" in script
    assert "    source ~/venv/bin/activate\n" in script
    for default in ("NODES=${SLURM_JOB_NUM_NODES:-3}\n", "TASKS_PER_NODE=${SLURM_NTASKS_PER_NODE:-2}\n",
                    "CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-4}\n"):
        assert default in script  # the allocation's counts win over the rendered ones at run time
    assert ('srun --nodes="$NODES" --ntasks="$((NODES * TASKS_PER_NODE))" --ntasks-per-node="$TASKS_PER_NODE" \\\n'
            '    --cpus-per-task="$CPUS_PER_TASK"') in script
    assert "--interface ib0" in script and '--nthreads "$CPUS_PER_TASK"' in script


def test_unset_options_leave_no_directive() -> None:
    script = render_script(SPECS["slurm-minimal"])
    for absent in ("#SBATCH --mem", "--time", "--account", "--partition", "--interface", "module load"):
        assert absent not in script
    assert "#SBATCH --mem=65536M" in render_script(SPECS["slurm-mem-per-node"])


def _shell_value(script: str, variable: str, environment: str = "JOB_ID=4242; HOME=/home/ada") -> str:
    """Evaluate the script's assignment of ``variable`` in bash and return the value it gets."""
    line = next(line for line in script.splitlines() if line.startswith(f"{variable}="))
    done = subprocess.run(["bash", "-c", f'{environment}; {line}; printf %s "${variable}"'],
                          capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [("scheduler_file", "/tmp/a b;touch /tmp/hpcbridge-pwned/f.json", "SCHEDULER_FILE"),
     ("scheduler_file", "/x/|&<>*?!/f.json", "SCHEDULER_FILE"), ("scheduler_file", "/a'b\"c/f.json", "SCHEDULER_FILE"),
     ("scheduler_file", "/f;reboot #x", "SCHEDULER_FILE")],
)
def test_values_reach_the_script_literally(field: str, value: str, variable: str) -> None:
    script = render_script(JobSpec(scheduler="slurm", **{field: value}))
    assert _shell_value(script, variable) == value
    assert not Path("/tmp/hpcbridge-pwned").exists()


def _shell_words(script: str, variable: str, environment: str = "HOME=/home/ada") -> list[str]:
    """Evaluate the script's assignment of the array ``variable`` in bash and return its words."""
    line = next(line for line in script.splitlines() if line.startswith(f"{variable}="))
    done = subprocess.run(["bash", "-c", f'{environment}; {line}; printf "%s\\n" "${{{variable}[@]}}"'],
                          capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_a_python_in_the_home_directory_expands_there() -> None:
    script = render_script(JobSpec(scheduler="slurm", python="~/venv/bin/python"))
    assert _shell_words(script, "PYTHON") == ["/home/ada/venv/bin/python"]


@pytest.mark.parametrize(("python", "words"), [
    ("apptainer exec /scratch/img.sif python3", ["apptainer", "exec", "/scratch/img.sif", "python3"]),
    ("apptainer exec --bind '/scratch/my data' ~/img.sif python3",
     ["apptainer", "exec", "--bind", "/scratch/my data", "/home/ada/img.sif", "python3"]),
    ("'/opt/py 3/bin/python' -X utf8", ["/opt/py 3/bin/python", "-X", "utf8"]),
    (["/opt/py 3/bin/python"], ["/opt/py 3/bin/python"]),
    ("/usr/bin/env 'A=x;touch /tmp/hpcbridge-pwned' python3", ["/usr/bin/env", "A=x;touch /tmp/hpcbridge-pwned", "python3"]),
])
def test_python_may_be_a_command_line_whose_words_reach_the_script_literally(python, words) -> None:
    """--python 'apptainer exec IMG python3' runs that command, each word quoted; never a path under the cwd."""
    script = render_script(JobSpec(scheduler="slurm", python=python))
    assert _shell_words(script, "PYTHON") == words
    assert not Path("/tmp/hpcbridge-pwned").exists()
    assert '"${PYTHON[@]}" -c \'import distributed\'' in script  # the preflight runs the same command


def test_a_python_path_with_spaces_that_exists_here_is_one_path(tmp_path: Path) -> None:
    interpreter = tmp_path / "my py" / "python"
    interpreter.parent.mkdir()
    interpreter.write_text("")
    assert JobSpec(python=str(interpreter)).python == (str(interpreter),)
    assert JobSpec(python="python3").python == ("python3",)


def test_scheduler_file_expands_home_and_job_id_only() -> None:
    spec = JobSpec(scheduler="slurm", scheduler_file="~/runs (x)/{job_id}/f'{job_id}'.json")
    assert _shell_value(render_script(spec), "SCHEDULER_FILE") == "/home/ada/runs (x)/4242/f'4242'.json"


def test_write_script_leaves_no_file_when_rendering_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "job.sh"
    target.write_text("the user's old script\n")

    def broken(spec: JobSpec) -> str:
        raise RuntimeError("template failed")

    monkeypatch.setattr(render, "render_script", broken)
    with pytest.raises(RuntimeError):
        write_script(SPECS["slurm-minimal"], target)
    assert target.read_text() == "the user's old script\n"
    assert list(tmp_path.iterdir()) == [target]


def test_written_scripts_are_executable(tmp_path: Path) -> None:
    script = write_script(SPECS["slurm-minimal"], tmp_path / "job.sh")
    assert script.stat().st_mode & 0o111


def _directives(script: str, prefix: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(prefix)]


def test_pbs_directives_for_pbs_pro_and_torque() -> None:
    assert _directives(render_script(SPECS["pbs-scheduler-file-full"]), "#PBS") == [
        "#PBS -N hpcbridge",
        "#PBS -l select=2:ncpus=6:mpiprocs=3:mem=6144mb",
        "#PBS -l place=scatter",
        "#PBS -l walltime=02:00:00",
        "#PBS -A p1",
        "#PBS -q short",
        "#PBS -j oe",
    ]
    assert _directives(render_script(SPECS["pbs-torque"]), "#PBS -l") == [
        "#PBS -l nodes=2:ppn=6",
        "#PBS -l mem=12288mb",
        "#PBS -l walltime=02:00:00",
    ]


def test_lsf_directives() -> None:
    assert _directives(render_script(SPECS["lsf-scheduler-file-full"]), "#BSUB") == [
        "#BSUB -J hpcbridge",
        "#BSUB -n 12",
        '#BSUB -R "span[ptile=6]"',
        '#BSUB -R "rusage[mem=1024MB]"',
        "#BSUB -M 2048MB",
        "#BSUB -W 02:00",
        "#BSUB -P p1",
        "#BSUB -q short",
        "#BSUB -o hpcbridge-%J.out",
    ]


@pytest.mark.parametrize(("scheduler", "launcher"), [("slurm", "srun --mpi=pmix"), ("pbs", "mpiexec"), ("lsf", "mpirun")])
def test_mpi_mode_launches_one_mpi_program(scheduler: str, launcher: str) -> None:
    script = render_script(SPECS[f"{scheduler}-mpi-full"])
    assert launcher in script
    assert '"${PYTHON[@]}" -m hpcbridge.cluster.mpi_job' in script
    assert "distributed.cli.dask_scheduler" not in script
    assert "import dask_mpi, mpi4py, hpcbridge" in script


def test_mpi_client_script_and_arguments_reach_rank_one_literally() -> None:
    script = render_script(SPECS["slurm-mpi-client"])
    assert "--client-script /home/a/run.py" in script
    assert "    --client-arg --size\n    --client-arg '10 000'\n" in script
    assert "export HPCBRIDGE_WORKERS=$((NODES * TASKS_PER_NODE - 2))" in script  # less the scheduler and client


def test_tls_exports_the_certificates_for_every_role_and_listens_on_the_scheduler_interface() -> None:
    script = render_script(SPECS["slurm-tls"])
    assert 'TLS_CA_FILE="$HOME"/tls/ca.pem' in script
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        assert f'export DASK_DISTRIBUTED__COMM__TLS__{role}__CERT="$TLS_CERT"' in script
    assert "export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True" in script
    assert "--protocol tls \\\n    --interface eth0" in script
    assert "    --interface ib0\n    --protocol tls\n" in script
    assert 'bash -c "$INTERFACE_CHECK" check eth0' in script


def test_ucx_sets_ucx_variables_and_checks_distributed_ucxx_first() -> None:
    script = render_script(SPECS["lsf-ucx"])
    assert 'export UCX_TLS="${UCX_TLS:-tcp,sm,self}"' in script
    assert 'export UCX_NET_DEVICES="${UCX_NET_DEVICES:-ib0}"' in script
    assert script.index("import distributed_ucxx") < script.index("distributed.cli.dask_scheduler")


def test_workers_retire_before_the_walltime() -> None:
    script = render_script(JobSpec(scheduler="slurm", walltime="1h", lifetime_margin="10m"))
    assert "    --preload hpcbridge.cluster.drain\n" in script
    assert "HPCBRIDGE_JOB_END=${SLURM_JOB_END_TIME:-$(($(date +%s) + 3600))}\n" in script
    assert "export HPCBRIDGE_LIFETIME_MARGIN=600\n" in script
    assert "export HPCBRIDGE_LIFETIME_MARGIN=30\n" in render_script(
        JobSpec(scheduler="slurm", walltime="1h", lifetime_margin="30s"))
    with pytest.raises(SpecError, match="at least 30 s"):  # never less than 30 s: the spec refuses it
        JobSpec(scheduler="slurm", walltime="1h", lifetime_margin=5)
    plain = render_script(JobSpec(scheduler="slurm"))
    assert "hpcbridge.cluster.drain" not in plain and "HPCBRIDGE_JOB_END" not in plain


def test_the_job_tells_clients_and_workers_where_runs_are_saved() -> None:
    script = render_script(JobSpec(scheduler="slurm", scheduler_file="/scratch/me/{job_id}/scheduler.json"))
    assert "export HPCBRIDGE_RUN_DIRECTORY=/scratch/me/runs\n" in script
    assert 'export HPCBRIDGE_RUN_DIRECTORY=""\n' in render_script(JobSpec(scheduler="slurm", save_runs=False))
    assert "export HPCBRIDGE_RUN_DIRECTORY=/data/runs\n" in render_script(
        JobSpec(scheduler="slurm", run_directory="/data/runs"))


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        ("slurm-pbspro-array", ["#SBATCH --array=1-20%4", "#SBATCH --output=hpcbridge-%A_%a.out"]),
        ("pbs-pbspro-array", ["#PBS -J 1-20", "#PBS -W max_run_subjobs=4"]),
        ("pbs-torque-array", ["#PBS -t 1-20%4"]),
        ("lsf-pbspro-array", ['#BSUB -J "hpcbridge[1-20]%4"', "#BSUB -o hpcbridge-%J_%I.out"]),
    ],
)
def test_array_directives_and_the_element_command(name: str, lines: list[str]) -> None:
    script = render_script(SPECS[name])
    for line in lines:
        assert f"\n{line}\n" in script
    assert script.rstrip().endswith("""exec "${PYTHON[@]}" /home/a/chunk.py 'a b'""")
    assert "dask_scheduler" not in script and "dask_worker" not in script


def test_ssh_script_lists_the_hosts_and_quotes_every_ssh_option() -> None:
    script = render_script(SPECS["ssh-full"])
    assert "HOSTS=(node1 node1 me@node2)" in script
    assert "SSH=(ssh -F '/home/a/my ssh/config' -o Port=2222 -o BatchMode=yes -o ConnectTimeout=20)" in script
    assert 'for _ in $(seq "$TASKS_PER_NODE"); do' in script  # --ntasks-per-node workers per line
    assert "source ~/venv/bin/activate" in script.split("<<'REMOTE'")[1].split("\nREMOTE\n")[0]  # setup runs there too
