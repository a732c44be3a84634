#!/bin/bash
#SBATCH --job-name=dask-mpi
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=2
#SBATCH --mem-per-cpu=2048M
#SBATCH --time=01:00:00
#SBATCH --output=dask-mpi-%j.out
#
# A Dask cluster on Slurm as one MPI program (dask-mpi; rendered by hpcbridge 0.1.0).
# Of the job's 8 MPI ranks, rank 0 runs the Dask scheduler, and the other 7 are Dask workers with 2 thread(s) each.
# Attach from Python or MATLAB with: hpcbridge.connect(<the scheduler file below>)
set -euo pipefail
# shellcheck disable=SC2034  # read only when the scheduler file's path holds {job_id}
JOB_ID=$SLURM_JOB_ID


# --- Software environment ------------------------------------------------------
PYTHON=python3

# --- Worker memory: each task's share of what Slurm allocated (in MiB) ---------
if [ -n "${SLURM_MEM_PER_CPU:-}" ]; then
    WORKER_MEMORY="$((SLURM_MEM_PER_CPU * 2))MiB"
elif [ -n "${SLURM_MEM_PER_NODE:-}" ]; then
    WORKER_MEMORY="$((SLURM_MEM_PER_NODE / 4))MiB"
else
    WORKER_MEMORY=auto
fi

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
# PMIx starts the MPI ranks (Debian's Open MPI has no PMI2).
srun --mpi=pmix --nodes=2 --ntasks=8 --ntasks-per-node=4 \
    --cpus-per-task=2 "${MPI_PROGRAM[@]}"
