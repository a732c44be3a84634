"""The program each rank runs in mpi mode refuses a world too small, saying the minimum."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import wait_for


def test_too_few_ranks_for_a_client_script_is_a_clear_error(tmp_path) -> None:
    script = tmp_path / "client.py"
    script.write_text("print('never runs')\n")
    environment = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    done = subprocess.run(
        ["mpirun", "-n", "2", sys.executable, "-m", "hpcbridge.cluster.mpi_job", "--scheduler-file", str(tmp_path / "s.json"),
         "--nthreads", "1", "--client-script", str(script)],
        capture_output=True, text=True, timeout=120, env=environment, cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "hpcbridge: mpi mode needs at least 3 MPI ranks (scheduler, client, one worker); this job has 2" in done.stderr
    assert "never runs" not in done.stdout
    assert not (tmp_path / "s.json").exists()


def test_in_mpi_mode_the_workers_leave_before_the_job_ends_and_say_so(tmp_path) -> None:
    """The drain preload runs on the dask-mpi workers: before HPCBRIDGE_JOB_END - margin they close, logging why."""
    from distributed import Client

    from hpcbridge.cluster import drain

    scheduler_file = tmp_path / "s.json"
    environment = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                   "HPCBRIDGE_JOB_END": str(int(time.time()) + 60), "HPCBRIDGE_LIFETIME_MARGIN": "30"}
    log_path = tmp_path / "mpi.log"
    log = log_path.open("w")
    program = subprocess.Popen(
        ["mpirun", "--oversubscribe", "-n", "3", sys.executable, "-m", "hpcbridge.cluster.mpi_job", "--scheduler-file",
         str(scheduler_file), "--nthreads", "1", "--interface", "lo", "--drain"],
        stdout=subprocess.DEVNULL, stderr=log, text=True, env=environment, start_new_session=True,
        cwd=tmp_path)  # dask-mpi's workers put their scratch space in the working directory
    try:
        assert wait_for(lambda: scheduler_file.exists() or program.poll() is not None, timeout=60)
        assert program.poll() is None, log_path.read_text()[-2000:]
        with Client(scheduler_file=str(scheduler_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            # Each worker leaves between end - margin - margin/3 and end - margin: 20-30 s from the start
            # here (a loaded machine took over 5 s to start the three ranks: a 45 s end left no time to join).
            assert wait_for(lambda: not client.scheduler_info()["workers"], timeout=60), log_path.read_text()[-2000:]
            events = client.get_events(drain.EVENT_TOPIC)
            assert len(events) == 2 and all(event["margin"] >= 30 for _, event in events)
            client.shutdown()
        program.wait(timeout=60)
    finally:
        if program.poll() is None:
            os.killpg(program.pid, signal.SIGKILL)
            program.wait(timeout=30)
        log.close()


def test_mpi_workers_keep_their_scratch_on_the_node_and_nothing_in_the_working_directory(tmp_path) -> None:
    """dask-mpi's own default puts dask-scratch-space/ in the working directory (often the shared file
    system): the workers use $TMPDIR, else $SLURM_TMPDIR, else /tmp instead, and the directory stays empty."""
    from distributed import Client

    work, scratch = tmp_path / "work", tmp_path / "node-scratch"
    work.mkdir()
    scratch.mkdir()
    scheduler_file = tmp_path / "s.json"
    environment = {key: value for key, value in os.environ.items() if key != "TMPDIR"}
    environment.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", SLURM_TMPDIR=str(scratch))
    log_path = tmp_path / "mpi.log"
    with log_path.open("w") as log:
        program = subprocess.Popen(
            ["mpirun", "--oversubscribe", "-n", "3", sys.executable, "-m", "hpcbridge.cluster.mpi_job",
             "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--interface", "lo"],
            stdout=subprocess.DEVNULL, stderr=log, text=True, env=environment, start_new_session=True, cwd=work)
        try:
            assert wait_for(lambda: scheduler_file.exists() or program.poll() is not None, timeout=60)
            assert program.poll() is None, log_path.read_text()[-2000:]
            with Client(scheduler_file=str(scheduler_file), timeout=30) as client:
                client.wait_for_workers(2, timeout=60)
                folders = client.run(lambda dask_worker: dask_worker.local_directory)
                assert all(folder.startswith(str(scratch)) for folder in folders.values()), folders
                client.shutdown()
            program.wait(timeout=60)
        finally:
            if program.poll() is None:
                os.killpg(program.pid, signal.SIGKILL)
                program.wait(timeout=30)
    assert list(work.iterdir()) == []


def test_a_client_script_that_returns_ends_the_mpi_cluster_with_a_clean_log(tmp_path) -> None:
    """The workers leave before the scheduler closes: no traceback, no ERROR, no lost-results warning."""
    script = tmp_path / "client.py"
    script.write_text(
        "import operator, sys\n"
        "from distributed import Client\n"
        "client = Client(scheduler_file=sys.argv[1], timeout=30)\n"
        "client.wait_for_workers(2, timeout=60)\n"
        "held = client.map(operator.neg, range(50))  # results held in the workers' memory at the end\n"
        "assert client.gather(held) == [-i for i in range(50)]\n"
        "print('client done', flush=True)\n")
    environment = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                   "HPCBRIDGE_DASHBOARD_TOKEN": "t" * 32}  # the job script exports it for the dashboard's gate
    scheduler_file = tmp_path / "s.json"
    try:
        done = subprocess.run(
            ["mpirun", "--oversubscribe", "-n", "4", sys.executable, "-m", "hpcbridge.cluster.mpi_job",
             "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--interface", "lo",
             "--client-script", str(script), "--client-arg", str(scheduler_file)],
            capture_output=True, text=True, env=environment, timeout=120, cwd=tmp_path, start_new_session=True)
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"the MPI job did not end: {expired.stderr}") from None
    log = done.stdout + done.stderr
    assert done.returncode == 0 and "client done" in log, log
    assert "Traceback" not in log and " - ERROR - " not in log and " - WARNING - " not in log, log
