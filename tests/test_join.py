"""Workers for a running cluster (hpcbridge/job/join.py): the rendered worker-only job of every batch
system, the one-line refusals, the certificate checks, and a real local cluster that gets a worker.

The Slurm flow (a map on the joined workers, status, cancel, TLS refusing another CA) is in
tests/cluster/test_scale.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hpcbridge import scheduler_file as files
from hpcbridge.backends import LocalBackend
from hpcbridge.backends.job import SubmittedJob
from hpcbridge.cli import main as cli
from hpcbridge.job import join
from hpcbridge.job.spec import JobSpec
from hpcbridge.tls import create_certificates
from tests.conftest import wait_for

CLUSTER = SubmittedJob("4242", "slurm", "/scratch/me/4242/scheduler.json")
TLS = dict(tls_ca_file="/scratch/me/4242/scheduler.tls/ca.pem", tls_cert="/scratch/me/4242/scheduler.tls/cert.pem",
           tls_key="/scratch/me/4242/scheduler.tls/key.pem")
FULL = dict(nodes=2, ntasks_per_node=3, cpus_per_task=4, mem_per_cpu="1G", walltime="2h", account="p1",
            queue="bigmem", interface="ib0", modules=("gcc/12",), setup=("source ~/env/bin/activate",),
            scheduler_file=CLUSTER.scheduler_file, **TLS)


def _joining(scheduler: str, **values) -> str:
    return join.render_join_script(CLUSTER, JobSpec(scheduler=scheduler, **{**FULL, **values}))


@pytest.mark.parametrize("scheduler", ["slurm", "pbs", "lsf", "local"])
def test_the_worker_only_job_is_valid_bash_runs_no_scheduler_and_presents_the_clusters_files(
        scheduler: str, tmp_path: Path) -> None:
    values = {"nodes": 1} if scheduler == "local" else {}
    script = _joining(scheduler, **values)
    path = tmp_path / "join.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)
    assert shutil.which("shellcheck"), "shellcheck is installed by the test command (make test)"
    checked = subprocess.run(["shellcheck", "--severity=style", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout
    assert "dask_scheduler" not in script and "hpcbridge.tls" not in script  # no scheduler, no new certificates
    assert "join a running cluster" in script and "cluster of job 4242" in script
    assert "SCHEDULER_FILE=/scratch/me/4242/scheduler.json\n" in script
    assert '--scheduler-file "$SCHEDULER_FILE"' in script
    assert "TLS_KEY=/scratch/me/4242/scheduler.tls/key.pem\n" in script
    assert 'export DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY="$TLS_KEY"' in script
    assert "--preload hpcbridge.cluster.drain" in script and "HPCBRIDGE_JOB_END=" in script  # drains before its walltime
    assert 'wait "$WORKERS_PID"' in script


def test_pbs_and_lsf_worker_jobs_ask_for_their_own_allocation() -> None:
    pbs = _joining("pbs")
    assert [line for line in pbs.splitlines() if line.startswith("#PBS -l")] == [
        "#PBS -l select=2:ncpus=12:mpiprocs=3:mem=12288mb", "#PBS -l place=scatter", "#PBS -l walltime=02:00:00"]
    assert "#PBS -q bigmem" in pbs
    assert 'mpiexec ${HOSTFILE_OPTION[@]+"${HOSTFILE_OPTION[@]}"} ${ENV_OPTIONS[@]+"${ENV_OPTIONS[@]}"} -n "$((NODES * TASKS_PER_NODE))"' in pbs
    torque = _joining("pbs", pbs_flavor="torque")
    assert "#PBS -l nodes=2:ppn=12" in torque
    lsf = _joining("lsf")
    assert [line for line in lsf.splitlines() if line.startswith("#BSUB") and line.split()[1] in ("-n", "-W", "-q")] \
        == ["#BSUB -n 24", "#BSUB -W 02:00", "#BSUB -q bigmem"]
    assert 'blaunch -z "${TASK_HOSTS[*]}" "${WORKER_COMMAND[@]}" "${WORKER_OPTIONS[@]}" &' in lsf


@pytest.fixture
def local_jobs():
    """Local jobs a test starts (``started.append(job_id)``): cancelled at its end."""
    started: list[str] = []
    yield started
    backend = LocalBackend()
    for job_id in started:
        backend.cancel(job_id)
        assert wait_for(lambda: backend.status(job_id).finished, timeout=30)


def _running_job(local_jobs: list[str], scheduler_file: Path | None) -> SubmittedJob:
    job_id = LocalBackend().submit("sleep 60")
    local_jobs.append(job_id)
    job = SubmittedJob(job_id, "local", str(scheduler_file) if scheduler_file else None)
    job.record()
    return job


def _scale(*argv: str):
    return CliRunner().invoke(cli, ["scale", *argv])


def _submitted() -> list[str]:
    return sorted(path.name for path in LocalBackend().home.glob("local-*"))


def test_bad_input_is_one_line_and_submits_nothing(local_jobs: list[str], tmp_path: Path) -> None:
    ended = LocalBackend().submit("exit 0")
    SubmittedJob(ended, "local", str(tmp_path / "ended.json")).record()
    assert wait_for(lambda: LocalBackend().status(ended).finished, timeout=30)
    fileless = _running_job(local_jobs, tmp_path / "never-written.json")
    array = _running_job(local_jobs, None)
    before = _submitted()
    cases = {
        ("local-0000dead", "--add", "1"): "Error: job local-0000dead: unknown to local (no local job",
        (ended, "--add", "1"): f"Error: job {ended} is not running (COMPLETED)",
        (fileless.job_id, "--add", "1"): f"Error: job {fileless.job_id} has no scheduler file at "
                                         f"{tmp_path / 'never-written.json'} (its Dask scheduler has not started yet",
        (array.job_id, "--add", "1"): f"Error: job {array.job_id} has no scheduler file (a job array",
        (fileless.job_id, "--add", "0"): "Error: Invalid value for '--add': 0 is not in the range x>=1.",
        (fileless.job_id, "--add", "two"): "Error: Invalid value for '--add': 'two' is not a valid integer",
        (fileless.job_id, "--add", "2", "--ntasks", "2"): "Error: --ntasks: '2' is not allowed; expected not given with --add",
        (fileless.job_id,): "Error: Missing option '--add'.",
    }
    for argv, expected in cases.items():
        result = _scale(*argv)
        assert result.exit_code != 0, (argv, result.output)
        last = result.output.strip().splitlines()[-1]
        assert last.startswith(expected), (argv, result.output)
        assert "Traceback" not in result.output
    assert _submitted() == before


def _tls_cluster(local_jobs: list[str], tmp_path: Path) -> tuple[SubmittedJob, object]:
    path = tmp_path / "cluster" / "scheduler.json"
    job = _running_job(local_jobs, path)
    made = create_certificates(files.certificate_dir(path))
    files.publish(path, {"address": "tls://127.0.0.1:9"},
                  {"job_id": job.job_id, "scheduler": "local",
                   "tls": {"ca_file": str(made.ca_file), "cert": str(made.cert), "key": str(made.key)}})
    return job, made


def test_the_clusters_certificates_must_be_there_and_owner_only(local_jobs: list[str], tmp_path: Path) -> None:
    cluster, made = _tls_cluster(local_jobs, tmp_path)
    spec = JobSpec(scheduler="local")
    joining = join.join_spec(cluster, spec)
    assert (joining.protocol, joining.tls_ca_file, joining.tls_key) == ("tls", str(made.ca_file), str(made.key))
    assert joining.scheduler_file == cluster.scheduler_file
    before = _submitted()
    made.key.chmod(0o640)
    with pytest.raises(join.JoinError, match=r"the certificate .*key.pem is mode 0640 .*yours alone \(chmod 600\)"):
        join.join(cluster, spec)
    made.key.chmod(0o600)
    made.ca_file.unlink()
    with pytest.raises(join.JoinError, match=r"the certificate .*ca.pem is missing: workers without it cannot join"):
        join.join(cluster, spec)
    assert _submitted() == before


def test_a_local_cluster_gets_a_joined_worker_and_its_cancel_ends_it(local_jobs: list[str], tmp_path: Path) -> None:
    from hpcbridge.client.bridge import connect
    from hpcbridge.job import submit as jobs

    cluster = jobs.submit(JobSpec(scheduler="local", scheduler_file=str(tmp_path / "{job_id}" / "scheduler.json")))
    local_jobs.append(cluster.job_id)
    with connect(cluster.scheduler_file, n_workers=1, timeout=60) as bridge:
        result = _scale(cluster.job_id, "--add", "1", "-c", "2")
        assert result.exit_code == 0, result.output
        worker_job = cluster.joined()[0]
        local_jobs.append(worker_job.job_id)
        assert result.output.startswith(f"job id:   {worker_job.job_id} (1 worker(s) joining job {cluster.job_id})")
        bridge.client.wait_for_workers(2, timeout=60)
        assert sorted(bridge.client.nthreads().values()) == [1, 2]
        status = CliRunner().invoke(cli, ["status", cluster.job_id])
        assert f"  worker jobs joined: {worker_job.job_id} (RUNNING)" in status.output
    cancelled = CliRunner().invoke(cli, ["cancel", cluster.job_id])
    assert cancelled.exit_code == 0, cancelled.output
    assert wait_for(lambda: worker_job.status().state == "CANCELLED", timeout=30), worker_job.status()
    assert not os.path.exists(cluster.scheduler_file)
