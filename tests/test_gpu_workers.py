"""GPU workers as rendered for each batch system, and the worker class (the real Slurm run is in
tests/cluster/test_gpu_workers.py).

PBS and LSF give a job GPUs per node: the script binds each worker to its share by its local rank.
That binding is run here as the script holds it, with the variables a launcher sets.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from hpcbridge.client import arguments
from hpcbridge.job import submit as jobs
from hpcbridge.job.render import render_script
from hpcbridge.job.spec import JobSpec, SpecError
from tests.conftest import wait_for


def binding(script: str) -> str:
    """The GPU_BINDING array of a rendered script."""
    return re.search(r"^GPU_BINDING=\(bash -c '.*?' hpcbridge-gpus\)$", script, re.S | re.M).group(0)


def bound(script: str, **environment: str) -> subprocess.CompletedProcess:
    """What CUDA_VISIBLE_DEVICES a worker of ``script`` gets, started in ``environment``."""
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"} | environment
    return subprocess.run(["bash", "-c", binding(script) + '\n"${GPU_BINDING[@]}" printenv CUDA_VISIBLE_DEVICES'],
                          env=env, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("scheduler, rank_variable", [("pbs", "OMPI_COMM_WORLD_LOCAL_RANK"),
                                                      ("lsf", "HPCBRIDGE_LOCAL_RANK")])
def test_each_worker_takes_its_share_of_the_gpus_its_node_gave_the_job(scheduler: str, rank_variable: str) -> None:
    script = render_script(JobSpec(scheduler=scheduler, ntasks_per_node=2, gpus_per_task=2))
    assert "--resources GPU=2" in script
    # The GPUs the batch system gave the job on this node, or 0..3 when it says none.
    assert bound(script, **{rank_variable: "1", "CUDA_VISIBLE_DEVICES": "4,5,6,7"}).stdout == "6,7\n"
    assert bound(script, **{rank_variable: "0"}).stdout == "0,1\n"
    assert bound(script, **{rank_variable: "1"}).stdout == "2,3\n"
    short = bound(script, **{rank_variable: "1", "CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert short.returncode == 1 and short.stdout == ""
    assert "has no GPUs of its own: the node gave the job GPUs 0 1 2" in short.stderr


def test_lsf_tells_each_of_a_hosts_workers_its_place_there() -> None:
    script = render_script(JobSpec(scheduler="lsf", ntasks_per_node=4, gpus_per_node=4))
    assert 'blaunch -z "${JOB_HOSTS[*]}" env HPCBRIDGE_LOCAL_RANK="$rank" "${WORKER_COMMAND[@]}"' in script
    assert 'for ((rank = 0; rank < TASKS_PER_NODE; rank++)); do' in script
    assert "--resources GPU=1" in script
    assert "GPU_BINDING" not in render_script(JobSpec(scheduler="lsf", ntasks_per_node=4))


def test_slurm_binds_through_srun_and_the_workers_offer_their_gpus() -> None:
    script = render_script(JobSpec(scheduler="slurm", ntasks_per_node=2, gpus_per_node=4))
    assert "#SBATCH --gres=gpu:4" in script
    assert "--kill-on-bad-exit=0 --gpus-per-task=2 \\" in script
    assert "--resources GPU=2" in script and "GPU_BINDING" not in script
    plain = render_script(JobSpec(scheduler="slurm", ntasks_per_node=2))
    assert "--gpus-per-task" not in plain and "--resources" not in plain


def test_mpi_and_array_jobs_only_ask_for_gpus() -> None:
    script = render_script(JobSpec(scheduler="slurm", mode="mpi", ntasks_per_node=3, gpus_per_node=3))
    assert "#SBATCH --gres=gpu:3" in script and "--resources" not in script


@pytest.mark.parametrize("values, field, says", [
    ({"scheduler": "slurm", "ntasks_per_node": 2, "gpus_per_node": 3}, "gpus_per_node", "a multiple of"),
    ({"worker_class": "CUDAWorker"}, "worker_class", "module and name"),
    ({"worker_class": "os.system;x"}, "worker_class", "module and name"),
    ({"scheduler": "slurm", "mode": "mpi", "ntasks_per_node": 2, "worker_class": "dask_cuda.CUDAWorker"},
     "worker_class", "scheduler-file"),
])
def test_bad_gpu_and_worker_options_are_refused_by_name(values, field: str, says: str) -> None:
    with pytest.raises(SpecError) as refused:
        JobSpec(**values)
    assert refused.value.field == field and says in str(refused.value)


@pytest.mark.parametrize("value", [{"GPU": 0}, {"GPU": -1}, {"GPU": float("nan")}, {"GPU": True}, {"": 1},
                                   {1: 1}, ["GPU"], "GPU=1"])
def test_bad_resources_of_a_map_are_refused_by_name(value) -> None:
    with pytest.raises(arguments.ArgumentError, match="^resources: .* is not allowed; expected a mapping"):
        arguments.resources("resources", value)
    assert arguments.resources("resources", {"GPU": 1}) == {"GPU": 1.0}
    assert arguments.resources("resources", {}) is None


def test_a_worker_class_that_does_not_load_stops_the_job_with_one_line_naming_it(local_spec, local_jobs) -> None:
    job = jobs.submit(local_spec(worker_class="nosuch_module.CUDAWorker"))
    local_jobs.append(job)
    assert wait_for(lambda: job.status().finished, timeout=60)
    assert job.status().state == "FAILED"
    log = open(job.status().log).read()
    said = [line for line in log.splitlines() if "worker class" in line]
    assert said == ["hpcbridge: the worker class nosuch_module.CUDAWorker (--worker-class) does not load in the "
                    "job's Python: ModuleNotFoundError: No module named 'nosuch_module'"], log
    assert "Traceback" not in log and "dask_worker" not in log  # stopped before any Dask process


def test_a_loading_worker_class_starts_the_workers_with_it(local_spec, local_jobs) -> None:
    script = render_script(local_spec(worker_class="distributed.Worker"))
    assert "--worker-class distributed.Worker" in script


def test_adaptive_worker_jobs_offer_their_gpus_and_refuse_a_container() -> None:
    from hpcbridge.job.adaptive import worker_job_options

    options = worker_job_options(JobSpec(scheduler="slurm", mem="4G", ntasks_per_node=2, gpus_per_task=1,
                                         worker_class="dask_cuda.CUDAWorker"))
    assert options["worker_extra_args"][-4:] == ["--resources", "GPU=1", "--worker-class", "dask_cuda.CUDAWorker"]
    with pytest.raises(SpecError, match="adaptive mode"):
        worker_job_options(JobSpec(scheduler="slurm", mem="4G", container="/i.sif", container_runtime="apptainer"))
