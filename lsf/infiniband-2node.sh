#!/bin/bash
#BSUB -J dask-ib
#BSUB -n 64
#BSUB -R "span[ptile=32]"
#BSUB -R "rusage[mem=4096MB]"
#BSUB -M 16384MB
#BSUB -W 04:00
#BSUB -o dask-ib-%J.out
#
# A Dask cluster on LSF in scheduler-file mode (rendered by hpcbridge 0.1.0).
# This script runs the Dask scheduler, then one Dask worker per task: 16 worker(s) with
# 4 thread(s) each as rendered, or as many as the allocation gives.
# Attach from Python or MATLAB with: hpcbridge.connect(<the scheduler file below>)
set -euo pipefail
JOB_ID=$LSB_JOBID
TASKS_PER_NODE=8
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
CPUS_PER_TASK=4
NODE_MEMORY_MIB=131072

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
export HPCBRIDGE_WORKERS=$((NODES * TASKS_PER_NODE))

# --- Runs on disk, and the end of the job -----------------------------------------
# Every finished chunk of a map is saved under this folder by the worker that computed it, so
# results outlive the job; a later job resumes a run from there.
export HPCBRIDGE_RUN_DIRECTORY="$HOME"/.hpcbridge/jobs/runs
# Workers stop taking work this long before the job ends (more if their chunks take long),
# finish what they run and leave one after another (hpcbridge.drain), so nothing is lost.
HPCBRIDGE_JOB_END=${SLURM_JOB_END_TIME:-$(($(date +%s) + 14400))}
export HPCBRIDGE_JOB_END
export HPCBRIDGE_LIFETIME_MARGIN=300

# Every Dask worker runs with these options; memory and threads are pinned explicitly so
# no worker guesses from the whole node.
WORKER_OPTIONS=(
    --scheduler-file "$SCHEDULER_FILE"
    --nworkers 1
    --nthreads "$CPUS_PER_TASK"
    --memory-limit "$WORKER_MEMORY"
    --interface ib0
    --preload hpcbridge.drain
    --death-timeout 60
)

# --- Preflight: fail now, with a reason, rather than later with a timeout ------
# INTERFACE_CHECK runs on every node before Dask starts there (its $ expand there, not here).
# It reads /proc/net/dev, which shows the caller's network namespace (/sys/class/net may not).
# shellcheck disable=SC2016
INTERFACE_CHECK='grep -q "^ *$1:" /proc/net/dev || { echo "hpcbridge: network interface $1 does not exist on $(hostname); it has: $(sed -n "s/^ *\([^:]*\):.*/\1/p" /proc/net/dev | xargs)" >&2; exit 1; }'
bash -c "$INTERFACE_CHECK" check ib0
# The job's Python must have Dask's distributed (a venv's packages are not in PATH's python3).
if ! PYTHON_SAYS=$("$PYTHON" -c 'import distributed' 2>&1); then
    echo "hpcbridge: the job's Python ($PYTHON) cannot import distributed: ${PYTHON_SAYS##*$'\n'}; install hpcbridge (or distributed) there, or pass --python with an interpreter that has it" >&2
    exit 1
fi
# The workers' interface, checked on every node.
blaunch -z "${JOB_HOSTS[*]}" bash -c "$INTERFACE_CHECK" check ib0

# --- Dask scheduler ------------------------------------------------------------
# A scheduler file left by an earlier job would send workers and clients to a dead address.
rm -f "$SCHEDULER_FILE"
mkdir -p "$(dirname "$SCHEDULER_FILE")"
"$PYTHON" -m distributed.cli.dask_scheduler \
    --scheduler-file "$SCHEDULER_FILE" \
    --protocol tcp \
    --interface ib0 \
    --port 0 \
    --dashboard-address :0 &
SCHEDULER_PID=$!
# However this script ends, the scheduler does not outlive it.
trap 'kill "$SCHEDULER_PID" 2>/dev/null || true' EXIT

echo "hpcbridge: waiting for the Dask scheduler to write $SCHEDULER_FILE"
deadline=$((SECONDS + 120))
until "$PYTHON" -c 'import json, sys; json.load(open(sys.argv[1]))' "$SCHEDULER_FILE" 2>/dev/null; do
    if ! kill -0 "$SCHEDULER_PID" 2>/dev/null; then
        echo "hpcbridge: the Dask scheduler exited before writing $SCHEDULER_FILE (see its messages above)" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "hpcbridge: no scheduler file after 120 s: $SCHEDULER_FILE" >&2
        kill "$SCHEDULER_PID"
        exit 1
    fi
    sleep 0.5
done
echo "hpcbridge: scheduler file ready: $SCHEDULER_FILE"

# --- Dask workers ----------------------------------------------------------------
# One worker per task: blaunch starts the command once for every host listed.
blaunch -z "${TASK_HOSTS[*]}" "$PYTHON" -m distributed.cli.dask_worker "${WORKER_OPTIONS[@]}" &
WORKERS_PID=$!

# --- Run until a client shuts the cluster down ---------------------------------
# client.shutdown() stops the scheduler, which tells every worker to close, and the job ends
# with the scheduler's exit status. Workers that all leave first with status 0 left by plan
# (they retire before the walltime): the job ends normally. Workers that all die (killed, out
# of memory) leave a cluster of no use: stop the scheduler and fail the job.
# A poll, not `wait -n`, which bash 4.2 (CentOS 7) lacks; bash keeps each child's exit status.
set +e
while kill -0 "$SCHEDULER_PID" 2>/dev/null && kill -0 "$WORKERS_PID" 2>/dev/null; do
    sleep 1
done
if ! kill -0 "$SCHEDULER_PID" 2>/dev/null; then
    wait "$SCHEDULER_PID"
    STATUS=$?
    echo "hpcbridge: the scheduler exited (status $STATUS); waiting for the workers to close"
    wait "$WORKERS_PID"
    exit "$STATUS"
fi
wait "$WORKERS_PID"
STATUS=$?
kill "$SCHEDULER_PID"
wait "$SCHEDULER_PID"
if [ "$STATUS" -eq 0 ]; then
    echo "hpcbridge: every worker left as planned (status 0); the scheduler is stopped"
    exit 0
fi
echo "hpcbridge: every worker exited (status $STATUS) while the scheduler ran; stopping it" >&2
exit 1
