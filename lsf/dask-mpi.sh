#!/bin/bash
#BSUB -J dask-mpi
#BSUB -n 16
#BSUB -R "span[ptile=8]"
#BSUB -R "rusage[mem=2048MB]"
#BSUB -M 4096MB
#BSUB -W 01:00
#BSUB -o dask-mpi-%J.out
#
# A Dask cluster on LSF as one MPI program (dask-mpi; rendered by hpcbridge 0.1.0).
# Of the job's 8 MPI ranks, rank 0 runs the Dask scheduler, and the other 7 are Dask workers with 2 thread(s) each.
# Attach from Python or MATLAB with: hpcbridge.connect(<the scheduler file below>)
set -euo pipefail
# shellcheck disable=SC2034  # read only when the scheduler file's path holds {job_id}
JOB_ID=$LSB_JOBID
# LSB_MCPU_HOSTS lists each host with its slots ("hostA 8 hostB 8"): one host entry per task.
JOB_HOSTS=()
TASK_HOSTS=()
while read -r host _slots; do
    JOB_HOSTS+=("$host")
    for ((task = 0; task < 4; task++)); do
        TASK_HOSTS+=("$host")
    done
done < <(xargs -n 2 <<< "$LSB_MCPU_HOSTS")


# --- Software environment ------------------------------------------------------
PYTHON=python3

# --- Worker memory: each worker's share of the memory asked for -----------------
WORKER_MEMORY=4096MiB

# --- Where the cluster's address goes ------------------------------------------
# Clients and workers find the scheduler through this file, one per job. A client script
# started by the job finds it in HPCBRIDGE_SCHEDULER_FILE.
SCHEDULER_FILE="$HOME"/.hpcbridge/jobs/"$JOB_ID"/scheduler.json
export HPCBRIDGE_SCHEDULER_FILE="$SCHEDULER_FILE"
export HPCBRIDGE_WORKERS=7
# What every rank runs: hpcbridge.mpi_job checks the world size, then calls dask-mpi.
MPI_PROGRAM=(
    "$PYTHON" -m hpcbridge.mpi_job
    --scheduler-file "$SCHEDULER_FILE"
    --nthreads 2
    --memory-limit "$WORKER_MEMORY"
    --protocol tcp
    --lifetime 3300
)

# --- Preflight: fail now, with a reason, rather than later with a timeout ------
"$PYTHON" -c 'import dask_mpi, mpi4py, hpcbridge' 2>/dev/null || {
    echo "hpcbridge: mpi mode needs dask-mpi, mpi4py and hpcbridge in $PYTHON (pip install 'hpcbridge[mpi]')" >&2
    exit 1
}

# A scheduler file left by an earlier job would send clients to a dead address.
rm -f "$SCHEDULER_FILE"
mkdir -p "$(dirname "$SCHEDULER_FILE")"

# --- The MPI program: 8 ranks --------------------------------------------------
# It ends when a client shuts the cluster down.
# An LSF-aware mpirun takes the hosts and slots from the job's LSB_* variables.
mpirun -n 8 "${MPI_PROGRAM[@]}"
