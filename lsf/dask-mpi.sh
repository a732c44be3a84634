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
# Of the job's MPI ranks (8 as rendered, or as many as the allocation gives), rank 0 runs
# the Dask scheduler, and the others are Dask workers with
# 2 thread(s) each (or the allocation's CPUs per task).
# Attach from Python or MATLAB with: hpcbridge.connect(<the scheduler file below>)
set -euo pipefail
JOB_ID=$LSB_JOBID
TASKS_PER_NODE=4
# LSB_MCPU_HOSTS lists each host with its slots ("hostA 8 hostB 8"): one host entry per task.
JOB_HOSTS=()
TASK_HOSTS=()
NODES=0
while read -r host _slots; do
    JOB_HOSTS+=("$host")
    NODES=$((NODES + 1))
    for ((task = 0; task < TASKS_PER_NODE; task++)); do
        TASK_HOSTS+=("$host")
    done
done < <(xargs -n 2 <<< "$LSB_MCPU_HOSTS")


# --- Software environment ------------------------------------------------------
PYTHON=python3

# --- The allocation: hosts and slots come from LSF at run time ---------------------
# (`bsub -n` with another count overrides the #BSUB lines above; the node count, counted
# from LSB_MCPU_HOSTS above, follows.)
CPUS_PER_TASK=2
NODE_MEMORY_MIB=16384

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
# An LSF-aware mpirun takes the hosts and slots from the job's LSB_* variables.
mpirun -n "$((NODES * TASKS_PER_NODE))" "${MPI_PROGRAM[@]}"
