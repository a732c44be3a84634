#!/bin/bash
#BSUB -J dask
#BSUB -n 8
#BSUB -R "span[ptile=8]"
#BSUB -R "rusage[mem=2048MB]"
#BSUB -M 4096MB
#BSUB -W 01:00
#BSUB -o dask-%J.out
#
# A Dask cluster on LSF in scheduler-file mode (rendered by hpcbridge 0.1.0).
# This script runs the Dask scheduler, then one Dask worker per task: 4 worker(s) with
# 2 thread(s) each as rendered, or as many as the allocation gives.
# Attach from Python or MATLAB with: hpcbridge.connect(<the scheduler file below>)
set -euo pipefail
# shellcheck disable=SC2034  # read only when the scheduler file's path holds {job_id}
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
# The job's Python: an interpreter, or a command line that runs one (a container's, say), as words.
PYTHON=(python3)

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
# A quote in the path is part of its name (shellcheck would take it for syntax: SC2089, SC2090).
# shellcheck disable=SC2089
SCHEDULER_FILE="$HOME"/.hpcbridge/jobs/"$JOB_ID"/scheduler.json
export HPCBRIDGE_SCHEDULER_FILE="$SCHEDULER_FILE"
export HPCBRIDGE_WORKERS=$((NODES * TASKS_PER_NODE))
# Every file and folder this job makes (the scheduler file, the certificates, Dask's
# spill folders) is its owner's alone: the scheduler file says where to send code that runs as you.
umask 077

# --- Dask's dashboard: on the scheduler's node only, for its owner only ---------
# It is plain HTTP without a login and shows task names, call stacks and every log line, so it
# listens on 127.0.0.1 there (the workers serve no pages); `hpcbridge dashboard JOB` prints the
# ssh tunnel that brings it to your computer. Port 0 is any free port (the scheduler file
# records the one taken). Other users of the node reach 127.0.0.1 too: the dashboard lets in
# only a browser that brings this token (hpcbridge.cluster.dashboard_gate), made anew at each
# start, kept in this job's environment and in the owner-only scheduler file (the link carries it).
# shellcheck disable=SC2034  # an adaptive job's program reads it from the spec instead
DASHBOARD_ADDRESS=127.0.0.1:0
HPCBRIDGE_DASHBOARD_TOKEN=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
export HPCBRIDGE_DASHBOARD_TOKEN

# --- Dask's statistical profiler: off unless asked for ------------------------------
# Sampling each worker's stack every 10 ms took 5-13 % of a SymPy map's time (2 cores). Export
# DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True into the job for the dashboard's Profile page.
export DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED="${DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED:-False}"

# --- Dask's own clocks: slower than its defaults, which compete with the work -------
# An idle 2-worker cluster (scheduler, 2 nannies, 2 workers) took 12 % of a core here, most of
# it each process's event-loop tick (every 20 ms, only to measure the loop's delay for the
# dashboard) and its system monitor (every 500 ms): 4 % with these. The memory monitor that
# spills, pauses and restarts workers keeps Dask's 100 ms.
export DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL="${DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL:-1s}"
export DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL="${DASK_DISTRIBUTED__ADMIN__SYSTEM_MONITOR__INTERVAL:-2s}"

# --- TLS: the scheduler, workers and clients present these; plain TCP is refused -
# This job makes its own CA, certificate and key when it starts (0600 files in a 0700
# folder beside the scheduler file, where hpcbridge.connect finds them); they are removed
# when the job ends. The key never appears in this script or on a command line.
TLS_DIR="${SCHEDULER_FILE%.json}.tls"
TLS_CA_FILE="$TLS_DIR/ca.pem"
TLS_CERT="$TLS_DIR/cert.pem"
TLS_KEY="$TLS_DIR/key.pem"
export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True
export DASK_DISTRIBUTED__COMM__TLS__CA_FILE="$TLS_CA_FILE"
export DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__CERT="$TLS_CERT"
export DASK_DISTRIBUTED__COMM__TLS__SCHEDULER__KEY="$TLS_KEY"
export DASK_DISTRIBUTED__COMM__TLS__WORKER__CERT="$TLS_CERT"
export DASK_DISTRIBUTED__COMM__TLS__WORKER__KEY="$TLS_KEY"
export DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT="$TLS_CERT"
export DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY="$TLS_KEY"

# --- Runs on disk, and the end of the job -----------------------------------------
# Every finished chunk of a map is saved under this folder by the worker that computed it, so
# results outlive the job; a later job resumes a run from there.
export HPCBRIDGE_RUN_DIRECTORY="$HOME"/.hpcbridge/jobs/runs
# Workers stop taking work this long before the job ends (more if their chunks take long),
# finish what they run and leave one after another (hpcbridge.cluster.drain), so nothing is lost.
HPCBRIDGE_JOB_END=${SLURM_JOB_END_TIME:-$(($(date +%s) + 3600))}
export HPCBRIDGE_JOB_END
export HPCBRIDGE_LIFETIME_MARGIN=300

# Every Dask worker runs with these options; memory and threads are pinned explicitly so
# no worker guesses from the whole node.
WORKER_OPTIONS=(
    --scheduler-file "$SCHEDULER_FILE"
    --nworkers 1
    --nthreads "$CPUS_PER_TASK"
    --memory-limit "$WORKER_MEMORY"
    --no-dashboard
    --dashboard-address 127.0.0.1:0
    --protocol tls
    --preload hpcbridge.cluster.quiet_exit
    --preload hpcbridge.cluster.drain
    --death-timeout 60
)
# Workers keep their scratch and spilled data on their node's own disk, never in the job's
# working directory (often a shared file system): $TMPDIR, else $SLURM_TMPDIR, else /tmp, as
# each node has it when its workers start (the single quotes keep the $ for that node's shell).
# shellcheck disable=SC2016
WORKER_COMMAND=(bash -c 'exec "$@" --local-directory "${TMPDIR:-${SLURM_TMPDIR:-/tmp}}"' hpcbridge-worker
                "${PYTHON[@]}" -m distributed.cli.dask_worker)

# --- Preflight: fail now, with a reason, rather than later with a timeout ------
# The job's Python must have Dask's distributed (a venv's packages are not in PATH's python3).
if ! PYTHON_SAYS=$("${PYTHON[@]}" -c 'import distributed' 2>&1); then
    echo "hpcbridge: the job's Python (${PYTHON[*]}) cannot import distributed: ${PYTHON_SAYS##*$'\n'}; install hpcbridge (or distributed) there, or pass --python with an interpreter that has it" >&2
    exit 1
fi
"${PYTHON[@]}" -c 'import hpcbridge.cluster.dashboard_gate' 2>/dev/null || {
    echo "hpcbridge: the dashboard's gate (it lets in only its owner) runs in the scheduler, with hpcbridge, which ${PYTHON[*]} cannot import; install hpcbridge there" >&2
    exit 1
}
"${PYTHON[@]}" -c 'import hpcbridge.tls' 2>/dev/null || {
    echo "hpcbridge: protocol tls (the default) makes this job's certificates with hpcbridge, which ${PYTHON[*]} cannot import; install hpcbridge there, or pass --tls-ca-file/--tls-cert/--tls-key, or --protocol tcp" >&2
    exit 1
}

# --- Dask scheduler ------------------------------------------------------------
# A scheduler file left by an earlier job would send workers and clients to a dead address.
# A scheduler file that a running cluster still uses is not this job's to replace: that
# cluster would go on running with nobody able to reach it. (A stale file is replaced.)
if [ -s "$SCHEDULER_FILE" ] && "${PYTHON[@]}" - "$SCHEDULER_FILE" <<'CHECK'
import json, socket, sys
try:
    with open(sys.argv[1]) as stream:
        host, port = json.load(stream)["address"].split("://")[-1].rsplit(":", 1)
    socket.create_connection((host.strip("[]"), int(port)), timeout=3).close()
except Exception:
    sys.exit(1)
CHECK
then
    echo "hpcbridge: $SCHEDULER_FILE belongs to a cluster that is still running; not replacing it (give this job another --scheduler-file)" >&2
    exit 1
fi
mkdir -p "$(dirname "$SCHEDULER_FILE")"
DASK_SCHEDULER_FILE="$SCHEDULER_FILE.dask"
rm -f "$SCHEDULER_FILE" "$DASK_SCHEDULER_FILE"
# This job's own CA, certificate and key (made by hpcbridge.tls with the cryptography package).
rm -rf "$TLS_DIR"
"${PYTHON[@]}" -m hpcbridge.tls "$TLS_DIR"
# With no client connected and no task to run for 1800 s, the scheduler ends itself
# (hpcbridge.cluster.idle_end), and so the job: a cluster left behind is not charged until its
# walltime. Its runs stay on disk; the job's output says why it ended.
export HPCBRIDGE_IDLE_TIMEOUT=1800
"${PYTHON[@]}" -m distributed.cli.dask_scheduler \
    --scheduler-file "$DASK_SCHEDULER_FILE" \
    --protocol tls \
    --port 0 \
    --dashboard-address "$DASHBOARD_ADDRESS" \
    --preload hpcbridge.cluster.idle_end \
    --preload hpcbridge.cluster.dashboard_gate &
SCHEDULER_PID=$!
# However this script ends (also by scancel/qdel/bkill), the scheduler does not outlive it, and
# neither do the scheduler file and the job's certificates.
# shellcheck disable=SC2090
trap 'kill "$SCHEDULER_PID" 2>/dev/null || true; rm -f "$SCHEDULER_FILE" "$DASK_SCHEDULER_FILE"; rm -rf "$TLS_DIR"' EXIT
trap 'exit 143' TERM

echo "hpcbridge: waiting for the Dask scheduler to write $DASK_SCHEDULER_FILE"
deadline=$((SECONDS + 120))
until "${PYTHON[@]}" -c 'import json, sys; json.load(open(sys.argv[1]))' "$DASK_SCHEDULER_FILE" 2>/dev/null; do
    if ! kill -0 "$SCHEDULER_PID" 2>/dev/null; then
        echo "hpcbridge: the Dask scheduler exited before writing $DASK_SCHEDULER_FILE (see its messages above)" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        echo "hpcbridge: no scheduler file after 120 s: $DASK_SCHEDULER_FILE" >&2
        kill "$SCHEDULER_PID"
        exit 1
    fi
    sleep 0.5
done
# Dask wrote its file; the job adds who wrote it (the job id, the batch system, a random
# identity for this start of the job, its folder, where the certificates are: absolute paths,
# so that a copy of the file elsewhere still leads to them; the node and address of the
# dashboard, for the ssh tunnel to it, and the token that opens it) and puts the result in place with one rename, so that
# nobody reads half a file and a client can tell this cluster from any other that used the same path.
"${PYTHON[@]}" - "$DASK_SCHEDULER_FILE" "$SCHEDULER_FILE" "$JOB_ID" lsf "$DASHBOARD_ADDRESS" "$TLS_CA_FILE" "$TLS_CERT" "$TLS_KEY" <<'PUBLISH'
import json, os, secrets, socket, sys
dask_file, final, job_id, scheduler, dashboard, *tls = sys.argv[1:]
with open(dask_file) as stream:
    info = json.load(stream)
port = info.get("services", {}).get("dashboard")
info["hpcbridge"] = {"job_id": job_id, "scheduler": scheduler, "cluster": secrets.token_hex(8),
                     "folder": os.path.dirname(os.path.abspath(final)),
                     "dashboard": {"node": socket.gethostname(), "host": dashboard.rpartition(":")[0], "port": port,
                                   "token": os.environ.get("HPCBRIDGE_DASHBOARD_TOKEN")} if port else None,
                     "tls": dict(zip(("ca_file", "cert", "key"), map(os.path.abspath, tls))) if tls else None}
temporary = f"{final}.{os.getpid()}.tmp"
with open(temporary, "w") as stream:
    json.dump(info, stream, indent=2)
os.replace(temporary, final)
PUBLISH
echo "hpcbridge: scheduler file ready: $SCHEDULER_FILE"

# --- While the cluster runs, the files it published must stay ------------------------
# A scratch purge (or anyone) that removes the scheduler file or the certificates leaves a
# cluster that no new client can attach to and that a restarted worker cannot rejoin, and
# nothing else would say so: check_published_files says it once in this job's output (where
# hpcbridge status and connect read it), after 10 s gone (a client's shutdown removes the
# file too, as the scheduler stops).
PUBLISHED_FILES=("$SCHEDULER_FILE" "$TLS_CA_FILE" "$TLS_CERT" "$TLS_KEY")
GONE_SINCE=
check_published_files() {
    local path missing=
    for path in "${PUBLISHED_FILES[@]}"; do
        [ -e "$path" ] || { missing=$path; break; }
    done
    if [ -z "$missing" ]; then
        GONE_SINCE=
    elif [ -z "$GONE_SINCE" ]; then
        GONE_SINCE=$SECONDS
    elif [ "$GONE_SINCE" != said ] && ((SECONDS - GONE_SINCE >= 10)); then
        if [ "$missing" = "$SCHEDULER_FILE" ]; then
            missing="the scheduler file $missing"
        else
            missing="the cluster's certificate $missing"
        fi
        echo "hpcbridge: warning: $missing is gone while the job runs (its folder purged or deleted?): no new client can attach, and a worker that restarts cannot rejoin; the cluster goes on with the clients and workers it has (cancel the job and submit it again with --scheduler-file in a folder that is not purged)" >&2
        GONE_SINCE=said
    fi
}

# --- Dask workers ----------------------------------------------------------------
# One worker per task: blaunch starts the command once for every host listed.
blaunch -z "${TASK_HOSTS[*]}" "${WORKER_COMMAND[@]}" "${WORKER_OPTIONS[@]}" &
WORKERS_PID=$!

# --- Run until a client shuts the cluster down ---------------------------------
# client.shutdown() stops the scheduler, which tells every worker to close, and the job ends
# with the scheduler's exit status. Workers that all leave first with status 0 left by plan
# (they retire before the walltime): the job ends normally. Workers that all die (killed, out
# of memory) leave a cluster of no use: stop the scheduler and fail the job.
# A poll, not `wait -n`, which bash 4.2 (CentOS 7) lacks; bash keeps each child's exit status.
set +e
while kill -0 "$SCHEDULER_PID" 2>/dev/null && kill -0 "$WORKERS_PID" 2>/dev/null; do
    check_published_files
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
if [ "$STATUS" -eq 0 ]; then
    sleep 5  # a waiting client looks every 2 s: it reads every worker's leaving before the scheduler goes
fi
kill "$SCHEDULER_PID"
wait "$SCHEDULER_PID"
if [ "$STATUS" -eq 0 ]; then
    echo "hpcbridge: every worker left as planned (status 0); the scheduler is stopped"
    exit 0
fi
echo "hpcbridge: every worker exited (status $STATUS) while the scheduler ran; stopping it" >&2
exit 1
