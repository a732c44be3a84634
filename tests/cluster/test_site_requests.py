"""What a job asks of Slurm (qos, node features, a reservation, whole nodes, any directive) reaches
a real sbatch and the job, and the workers write nothing into the job's working directory.

The harness's nodes carry the features ssd and avx2. It runs without accounting (no slurmdbd:
AccountingStorageType=accounting_storage/none), so Slurm keeps no QOS on a job (``scontrol show
job`` says QOS=(null) whatever was asked): that sbatch read ``--qos`` from the script is checked
with ``sbatch -v --test-only``, which prints every option it parsed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpcbridge.client.bridge import connect
from hpcbridge.job import submit as jobs
from hpcbridge.job.render import write_script
from tests.conftest import wait_for

RESERVATION = "hpcb_maint"
ASKED = dict(qos="long", constraint="ssd&avx2", exclusive=True, directives=('--comment "a b#c"',))


def _job_fields(cluster, job_id: str) -> dict[str, str]:
    text = cluster.run("scontrol", "show", "job", "-o", job_id).stdout
    return {key: value.strip() for key, value in re.findall(r"(\w+)=(.*?)(?= \w+=|$)", text.strip())}


def test_sbatch_reads_every_request_from_the_script(slurm_cluster, batch_spec, tmp_path: Path) -> None:
    script = write_script(batch_spec(slurm_cluster, "slurm", reservation=RESERVATION, **ASKED), tmp_path / "job.sh")
    done = slurm_cluster.run("sbatch", "-v", "--test-only", str(script))
    parsed = dict(re.findall(r"^sbatch: (\S+)\s+: (.*)$", done.stderr, re.M))
    assert parsed["qos"] == "long", done.stderr
    assert parsed["constraint"] == "ssd&avx2" and parsed["exclusive"] == "exclusive"
    assert parsed["reservation"] == RESERVATION and parsed["comment"] == "a b#c"  # double quotes, a # kept


def test_a_job_runs_in_its_reservation_with_its_features_whole_node_and_directive(
        slurm_cluster, batch_spec, batch_jobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created = slurm_cluster.run("scontrol", "create", "reservation", f"ReservationName={RESERVATION}", "Users=root",
                                "StartTime=now", "Duration=10", "Nodes=ALL", "Flags=IGNORE_JOBS")
    assert created.returncode == 0, created.stderr
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the job's working directory: sbatch starts the job where it is run
    # A job that does not ask for the reservation waits for it to end (submitted first, so the
    # node's only reason to refuse it is the reservation).
    outsider = slurm_cluster.sbatch("--wrap", "true")
    try:
        job = jobs.submit(batch_spec(slurm_cluster, "slurm", ntasks_per_node=2, mem_per_cpu="300M",
                                     job_name="asked", reservation=RESERVATION,
                                     scheduler_file=str(tmp_path / "files" / "{job_id}" / "scheduler.json"),
                                     **ASKED))
        batch_jobs.append(job)
        with connect(job.scheduler_file, n_workers=2, timeout=120) as bridge:
            fields = _job_fields(slurm_cluster, job.job_id)
            assert fields["JobState"] == "RUNNING"
            assert fields["Reservation"] == RESERVATION
            assert fields["Features"] == "ssd&avx2"
            assert fields["OverSubscribe"] == "NO"  # --exclusive
            assert fields["Comment"] == "a b#c"  # the --directive line
            assert fields["QOS"] == "(null)"  # no accounting here: Slurm keeps no QOS (see the module's docstring)
            assert wait_for(lambda: "Reserved_for_maintenance" in _job_fields(slurm_cluster, outsider)["Reason"],
                            timeout=20), slurm_cluster.run("scontrol", "show", "job", outsider).stdout
            # The workers' scratch is on the node's own disk, not in the job's working directory.
            folders = bridge.client.run(lambda dask_worker: dask_worker.local_directory)
            assert len(folders) == 2 and not any(folder.startswith(str(tmp_path)) for folder in folders.values())
            assert sum(bridge.gather(bridge.map(abs, range(-50, 50)))) == 2500
            bridge.shutdown()
        assert wait_for(lambda: job.status().finished, timeout=60), job.status()
        assert job.status().state == "COMPLETED", Path(job.status().log).read_text()
        assert sorted(path.name for path in work.iterdir()) == [f"asked-{job.job_id}.out"]
    finally:
        slurm_cluster.run("scancel", outsider)
        for job in batch_jobs:
            job.cancel()
        assert wait_for(lambda: slurm_cluster.run("scontrol", "delete", f"reservation={RESERVATION}").returncode == 0,
                        timeout=30)
