"""Containers: the job's scheduler, workers and checks run in an image (``--container``).

The real run uses Charliecloud's ``ch-run`` (unprivileged, in Debian): its image is a folder made
by the test, an empty root with this machine's ``/usr`` and this Python's folders bound in
(``--container-bind``), so that nothing is downloaded and the image holds this environment's
distributed and hpcbridge. ``ch-run`` gives the container a mount namespace of its own and sets
``CH_RUNNING``: the scheduler and every worker say both. The other runtimes are checked as rendered.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hpcbridge
from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.job.render import render_script
from hpcbridge.job.spec import JobSpec, SpecError
from tests.conftest import job_processes, wait_for


def image_folder(root: Path, binds: list[str]) -> Path:
    """An image folder: an empty root whose /bin, /lib... lead to /usr, which the job binds in.

    ``ch-run`` mounts the image read-only, so every folder bound in must already exist in it: the
    usual ones and the ``binds`` (CI's checkout lives under a top folder of its own).
    """
    image = root / "image"
    for name in {"usr", "etc", "proc", "sys", "dev", "tmp", "home", "root", "var", "run", "mnt", "opt",
                 *(bind.strip("/") for bind in binds)}:
        (image / name).mkdir(parents=True, exist_ok=True)
    for name in ("bin", "lib", "lib64", "sbin"):
        os.symlink(f"usr/{name}", image / name)
    for name in ("passwd", "group", "hosts", "resolv.conf"):
        (image / "etc" / name).touch()  # ch-run binds the host's over these
    return image


def top_folder(path: str) -> str:
    """The first folder of an absolute path (/work for /work/main/.venv)."""
    return "/" + Path(path).parts[1]


@pytest.mark.skipif(shutil.which("ch-run") is None, reason="Charliecloud's ch-run is not installed "
                    "(apt-get install --no-install-recommends charliecloud-runtime)")
def test_a_local_cluster_runs_its_scheduler_and_workers_under_charliecloud(local_spec, local_jobs, tmp_path,
                                                                          monkeypatch) -> None:
    monkeypatch.delenv("USER", raising=False)  # the job sets it for ch-run, which refuses to start without
    python_folders = {top_folder(sys.prefix), top_folder(os.path.realpath(sys.executable)),
                      top_folder(hpcbridge.__file__)} - {"/usr", "/tmp"}
    binds = ["/usr", *sorted(python_folders)]
    job = jobs.submit(local_spec(ntasks_per_node=2, mem="2G", container=str(image_folder(tmp_path, binds)),
                                 container_runtime="charliecloud", container_binds=binds))
    local_jobs.append(job)

    def where_am_i() -> tuple[str | None, str]:  # nested: it travels by value (the workers cannot import tests)
        """Charliecloud's marker and this process's mount namespace."""
        return os.environ.get("CH_RUNNING"), os.readlink("/proc/self/ns/mnt")

    with connect(job=job, n_workers=2, timeout=60) as bridge:  # a job that fails says why at once
        here = where_am_i()
        workers = bridge.client.run(where_am_i)
        scheduler = bridge.client.run_on_scheduler(where_am_i)
        assert len(workers) == 2
        for marker, namespace in [scheduler, *workers.values()]:
            assert marker is not None and namespace != here[1]  # inside a container of its own
        assert here[0] is None
        assert bridge.gather(bridge.map(abs, range(-10, 10))) == [abs(i) for i in range(-10, 10)]
        bridge.shutdown()
    assert wait_for(lambda: job.status().finished, timeout=30)
    assert (job.status().state, job.status().exit_code) == ("COMPLETED", 0)
    assert wait_for(lambda: not job_processes(job.job_id), timeout=15)


def rendered(**values) -> str:
    values = {"scheduler": "slurm", "python": "python3", "container": "/images/py.sif",
              "scheduler_file": "/scratch/me/{job_id}/scheduler.json", **values}
    return render_script(JobSpec(**values))


@pytest.mark.parametrize("runtime, start, bind", [
    ("apptainer", "CONTAINER=(apptainer exec)", 'CONTAINER+=(--bind "$folder")'),
    ("singularity", "CONTAINER=(singularity exec)", 'CONTAINER+=(--bind "$folder")'),
    ("charliecloud", "CONTAINER=(ch-run)", 'CONTAINER+=(-b "$folder")'),
    ("podman", "CONTAINER=(podman run --rm -i --network=host", 'CONTAINER+=(-v "$folder:$folder")'),
])
def test_each_runtime_puts_its_command_before_the_jobs_python(runtime: str, start: str, bind: str) -> None:
    script = rendered(container_runtime=runtime, container_binds=["/software"])
    assert start in script and bind in script
    assert 'PYTHON=("${CONTAINER[@]}" "${PYTHON[@]}")' in script
    # the home, the scheduler file's folder (certificates beside it), the run directory, the scratch; then the asked
    assert ('CONTAINER_FOLDERS=("$HOME" /scratch/me/"$JOB_ID" /scratch/me/runs "${TMPDIR:-${SLURM_TMPDIR:-/tmp}}")'
            in script)
    assert "CONTAINER_FOLDERS+=(/software)" in script
    assert script.index("PYTHON=(\"${CONTAINER") < script.index("import distributed")  # the checks run inside
    assert ("CONTAINER+=(/images/py.sif --)" if runtime == "charliecloud" else "CONTAINER+=(/images/py.sif)") in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


@pytest.mark.parametrize("vendor, flag", [("nvidia", "--nv"), ("amd", "--rocm")])
def test_apptainer_gets_the_gpus_of_a_gpu_job(vendor: str, flag: str) -> None:
    assert f"CONTAINER=(apptainer exec {flag})" in rendered(container_runtime="apptainer", gpus_per_task=1,
                                                            container_gpu=vendor)
    assert "CONTAINER=(apptainer exec)" in rendered(container_runtime="apptainer", container_gpu=vendor)


def test_given_tls_files_and_scratch_are_bound_in(tmp_path: Path) -> None:
    script = rendered(container_runtime="apptainer", local_directory="/local/me", protocol="tls",
                      tls_ca_file="/certs/ca.pem", tls_cert="/certs/cert.pem", tls_key="/keys/key.pem")
    assert 'CONTAINER_FOLDERS=("$HOME" /scratch/me/"$JOB_ID" /scratch/me/runs /local/me /certs /keys)' in script


@pytest.mark.parametrize("values, field, says", [
    ({"container": "/i.sif"}, "container_runtime", "apptainer, singularity, charliecloud, podman"),
    ({"container_runtime": "podman"}, "container_runtime", "without container"),
    ({"container": "/i.sif", "container_runtime": "docker"}, "container_runtime", "one of"),
    ({"container": "-v /:/host", "container_runtime": "podman"}, "container", "not starting with -"),
    ({"container": "/i.sif", "container_runtime": "apptainer", "container_binds": ["/a:/b"]}, "container_binds", "no :"),
    ({"container": "/i.sif", "container_runtime": "apptainer", "scheduler": "ssh", "hosts": ["n1"]}, "container",
     "ssh"),
])
def test_bad_container_options_are_refused_by_name(values, field: str, says: str) -> None:
    with pytest.raises(SpecError) as refused:
        JobSpec(**values)
    assert refused.value.field == field and says in str(refused.value)
