#!/bin/bash
#PBS -N dask-mpi
#PBS -l select=2:ncpus=8:mpiprocs=4:mem=16384mb
#PBS -l place=scatter
#PBS -l walltime=01:00:00
#PBS -j oe
#
# A Dask cluster on PBS as one MPI program (dask-mpi; rendered by hpcbridge 0.1.0).
# Of the job's MPI ranks (8 as rendered, or as many as the allocation gives), rank 0 runs
# the Dask scheduler, and the others are Dask workers with
# 2 thread(s) each (or the allocation's CPUs per task).
# Attach from Python or MATLAB with: hpcbridge.connect(<the scheduler file below>)
set -euo pipefail
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

# --- The allocation: the node count comes from the node file at run time -----------
# (`qsub -l` with other counts overrides the #PBS lines above; tasks and threads per node stay
# as rendered unless PBS says otherwise.)
NODES=2
if [ -n "${PBS_NODEFILE:-}" ] && [ -r "$PBS_NODEFILE" ]; then
    NODES=$(sort -u "$PBS_NODEFILE" | wc -l)
fi
TASKS_PER_NODE=4
# PBS Pro gives each chunk's CPUs as NCPUS.
CPUS_PER_TASK=$(( ${NCPUS:-8} / TASKS_PER_NODE ))
NODE_MEMORY_MIB=$((2048 * CPUS_PER_TASK * TASKS_PER_NODE))

# --- Worker memory: each task's share of the node's memory, after room for the scheduler --
# The scheduler (and each worker's nanny) runs beside the workers: an eighth of the node, at
# most 2 GiB, is left to them. Without a memory request, workers take their share of the node.
if [ -n "$NODE_MEMORY_MIB" ]; then
    SCHEDULER_ROOM_MIB=$((NODE_MEMORY_MIB / 8 < 2048 ? NODE_MEMORY_MIB / 8 : 2048))
    WORKER_MEMORY="$(((NODE_MEMORY_MIB - SCHEDULER_ROOM_MIB) / TASKS_PER_NODE))MiB"
else
    WORKER_MEMORY=auto
fi

# --- Where the cluster's address goes ------------------------------------------
# Clients and workers find the scheduler through this file, one per job. A client script
# started by the job finds it in HPCBRIDGE_SCHEDULER_FILE.
SCHEDULER_FILE="$HOME"/.hpcbridge/jobs/"$JOB_ID"/scheduler.json
export HPCBRIDGE_SCHEDULER_FILE="$SCHEDULER_FILE"
export HPCBRIDGE_WORKERS=$((NODES * TASKS_PER_NODE - 1))
# What every rank runs: hpcbridge.mpi_job checks the world size, then calls dask-mpi.
MPI_PROGRAM=(
    "$PYTHON" -m hpcbridge.mpi_job
    --scheduler-file "$SCHEDULER_FILE"
    --nthreads "$CPUS_PER_TASK"
    --memory-limit "$WORKER_MEMORY"
    --protocol tcp
    --lifetime 3300
)

# --- Preflight: fail now, with a reason, rather than later with a timeout ------
# The job's Python must have Dask's distributed (a venv's packages are not in PATH's python3).
if ! PYTHON_SAYS=$("$PYTHON" -c 'import distributed' 2>&1); then
    echo "hpcbridge: the job's Python ($PYTHON) cannot import distributed: ${PYTHON_SAYS##*$'\n'}; install hpcbridge (or distributed) there, or pass --python with an interpreter that has it" >&2
    exit 1
fi
"$PYTHON" -c 'import dask_mpi, mpi4py, hpcbridge' 2>/dev/null || {
    echo "hpcbridge: mpi mode needs dask-mpi, mpi4py and hpcbridge in $PYTHON (pip install 'hpcbridge[mpi]')" >&2
    exit 1
}

# A scheduler file left by an earlier job would send clients to a dead address.
rm -f "$SCHEDULER_FILE"
mkdir -p "$(dirname "$SCHEDULER_FILE")"

# --- The MPI program: one rank per task -------------------------------------------
# It ends when a client shuts the cluster down.
mpiexec ${HOSTFILE_OPTION[@]+"${HOSTFILE_OPTION[@]}"} -n "$((NODES * TASKS_PER_NODE))" --map-by "ppr:$TASKS_PER_NODE:node" --bind-to none \
    "${MPI_PROGRAM[@]}"
