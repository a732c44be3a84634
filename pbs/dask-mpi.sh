#!/bin/bash
#PBS -N dask-mpi
#PBS -l select=2:ncpus=8:mpiprocs=4:mem=16384mb
#PBS -l place=scatter
#PBS -l walltime=01:00:00
#PBS -j oe
#
# A Dask cluster on PBS as one MPI program (dask-mpi; rendered by hpcbridge 0.1.0).
# Of the job's 8 MPI ranks, rank 0 runs the Dask scheduler, and the other 7 are Dask workers with 2 thread(s) each.
# Attach from Python or MATLAB with: hpcbridge.connect(<the scheduler file below>)
set -euo pipefail
# shellcheck disable=SC2034  # read only when the scheduler file's path holds {job_id}
JOB_ID=$PBS_JOBID
cd "${PBS_O_WORKDIR:-.}"
# Slurm's Torque wrappers provide no node file; Slurm's own helper writes one.
if [ -z "${PBS_NODEFILE:-}" ] && command -v generate_pbs_nodefile >/dev/null; then
    PBS_NODEFILE=$(generate_pbs_nodefile)
    export PBS_NODEFILE
fi
# mpiexec (Open MPI) places processes on the job's nodes from the node file. The array is
# expanded as ${HOSTFILE_OPTION[@]+...} because bash before 4.4 calls an empty array unbound.
HOSTFILE_OPTION=(${PBS_NODEFILE:+--hostfile "$PBS_NODEFILE"})


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
mpiexec ${HOSTFILE_OPTION[@]+"${HOSTFILE_OPTION[@]}"} -n 8 --map-by ppr:4:node --bind-to none \
    "${MPI_PROGRAM[@]}"
