"""The program each rank runs in mpi mode refuses a world too small, saying the minimum."""

from __future__ import annotations

import os
import subprocess
import sys


def test_too_few_ranks_for_a_client_script_is_a_clear_error(tmp_path) -> None:
    script = tmp_path / "client.py"
    script.write_text("print('never runs')\n")
    environment = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    done = subprocess.run(
        ["mpirun", "-n", "2", sys.executable, "-m", "hpcbridge.mpi_job", "--scheduler-file", str(tmp_path / "s.json"),
         "--nthreads", "1", "--client-script", str(script)],
        capture_output=True, text=True, timeout=120, env=environment,
    )
    assert done.returncode != 0
    assert "hpcbridge: mpi mode needs at least 3 MPI ranks (scheduler, client, one worker); this job has 2" in done.stderr
    assert "never runs" not in done.stdout
    assert not (tmp_path / "s.json").exists()
