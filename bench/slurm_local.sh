#!/usr/bin/env bash
# Pre-emption on a real (single-node) Slurm: bring up munged, slurmctld and slurmd on this machine from
# Debian's packages, submit a 2x2 sweep through hydra/launcher=slurm, requeue one job mid-run (SIGTERM,
# as a pre-emption sends it), and check that the job resumes from its checkpoint, that the sweep
# completes, and that re-running the sweep command trains nothing. Everything it starts is stopped, and
# its temp dir removed, at exit.
#
#   sudo bench/slurm_local.sh            # a few minutes on 2 CPU cores; prints PASS or FAIL
#   bench/slurm_local.sh --out DIR       # keep the sweep (DIR/sweeps, DIR/sweep*.log) and Slurm's logs
#   bench/slurm_local.sh --keep          # also keep the temp dir (slurm.conf, munge key, Slurm's state)
#
# Needs root (slurmd launches the jobs; apt-get installs slurm-wlm and munge if they are missing).
# Environment: PYTHON (the interpreter of the sweep and of its jobs; default .venv/bin/python, else
# python3), SLURM_LOCAL_PORT (slurmctld's port, slurmd takes the next; default 16817),
# SLURM_LOCAL_CPUS (CPUs of the node, default min(2, nproc)), SLURM_LOCAL_TIMEOUT (seconds allowed to
# each sweep, default 900). Exit status: 0 on PASS, 1 on FAIL.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=""
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "slurm_local: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=$(command -v python3); fi
fi
CTLD_PORT=${SLURM_LOCAL_PORT:-16817}
NPROC=$(nproc)
CPUS=${SLURM_LOCAL_CPUS:-$(( NPROC < 2 ? NPROC : 2 ))}
SWEEP_TIMEOUT=${SLURM_LOCAL_TIMEOUT:-900}
PARTITION=local
FRAMES=4000       # per run; a checkpoint every SAVE_EVERY frames gives the requeue a run to interrupt
SAVE_EVERY=1000

log() { echo "[slurm_local] $*"; }
FAILURES=()
fail() { FAILURES+=("$*"); log "FAIL: $*"; }
WORK="" MUNGED_PID="" CTLD_PID="" SLURMD_PID="" SWEEP_PID="" TORN_DOWN=0 SUMMARY_PRINTED=0
STEPD_BEFORE=" $(pgrep -x slurmstepd | tr '\n' ' ') "
finish() {  # stop everything, check that nothing is left, print the summary line and exit
    local leftover
    teardown
    # shellcheck disable=SC2046,SC2086
    leftover=$(alive $MUNGED_PID $CTLD_PID $SLURMD_PID $(new_stepds) | tr '\n' ' ')
    [ -z "$leftover" ] || fail "processes left behind: $leftover"
    SUMMARY_PRINTED=1
    if [ ${#FAILURES[@]} -eq 0 ]; then
        echo "slurm_local: PASS ($*)"
        exit 0
    fi
    echo "slurm_local: FAIL (${#FAILURES[@]} check(s) failed: $(IFS=';'; echo "${FAILURES[*]}"))"
    exit 1
}
abort() { fail "$*"; finish "aborted"; }

stop_pid() {  # stop_pid PID NAME: SIGTERM, then SIGKILL after 15 s
    local pid=$1 name=$2 i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
        log "cleanup: $name (pid $pid) ignored SIGTERM; SIGKILL"
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

new_stepds() {  # slurmstepd processes that were not there before this script (the step daemons of our slurmd)
    local pid
    for pid in $(pgrep -x slurmstepd); do case "$STEPD_BEFORE" in *" $pid "*) ;; *) echo "$pid" ;; esac; done
}
alive() {  # alive PID...: the PIDs that run (a zombie, an exited process its parent has not reaped, does not)
    local pid st
    for pid in "$@"; do st=$(ps -o stat= -p "$pid" 2>/dev/null) && [ "${st:0:1}" != Z ] && echo "$pid"; done
}

teardown() {  # stop the sweep, the jobs and the daemons this script started (idempotent)
    local i pid
    [ $TORN_DOWN = 1 ] && return 0
    TORN_DOWN=1
    stop_pid "$SWEEP_PID" "the sweep"
    if [ -n "$CTLD_PID" ] && kill -0 "$CTLD_PID" 2>/dev/null && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        log "cleanup: cancelling the jobs left in the queue"
        scancel --partition="$PARTITION" 2>/dev/null
        for i in $(seq 1 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
    fi
    for i in $(seq 1 40); do [ -z "$(alive $(new_stepds))" ] && break; sleep 0.5; done  # steps winding down
    stop_pid "$SLURMD_PID" slurmd
    stop_pid "$CTLD_PID" slurmctld
    stop_pid "$MUNGED_PID" munged
    for pid in $(alive $(new_stepds)); do log "cleanup: killing leftover slurmstepd $pid"; kill -KILL "$pid"; done
    for i in $(seq 1 20); do [ -z "$(new_stepds)" ] && break; sleep 0.5; done  # let init reap them
    [ -z "$MUNGED_PID" ] || log "stopped the daemons this script started (munged, slurmctld, slurmd)"
}

on_exit() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    teardown
    if [ -n "$WORK" ]; then
        if [ $KEEP = 1 ]; then log "kept $WORK (slurm.conf, state)"; else rm -rf "$WORK"; fi
    fi
    case "$OUT" in "$WORK"/*) [ $KEEP = 1 ] || OUT="" ;; esac
    [ -z "$OUT" ] || log "sweep and logs in $OUT"
    [ $SUMMARY_PRINTED = 1 ] || echo "slurm_local: FAIL (stopped by a signal or an error, exit status $rc)"
    exit $rc
}

trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[ "$(id -u)" = 0 ] || abort "needs root: slurmd launches the jobs and apt-get installs slurm-wlm and munge"
[ -x "$PYTHON" ] || abort "no python at '$PYTHON' (set PYTHON=)"

# --- packages ----------------------------------------------------------------------------------------
missing=0
for tool in munged slurmctld slurmd sbatch scontrol squeue; do
    command -v "$tool" >/dev/null || PATH=$PATH:/usr/sbin:/sbin
    command -v "$tool" >/dev/null || missing=1
done
if [ $missing = 1 ]; then
    log "installing slurm-wlm and munge (apt-get)"
    added_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # install without starting the system's daemons
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && added_policy=1
    fi
    apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends slurm-wlm munge; }
    apt_install >/tmp/slurm_local_apt.log 2>&1 || { apt-get update && apt_install; } >>/tmp/slurm_local_apt.log 2>&1
    apt_rc=$?
    [ $added_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ $apt_rc = 0 ] || abort "apt-get install slurm-wlm munge failed (see /tmp/slurm_local_apt.log)"
fi

# --- a private Slurm: config, key, state and logs in a temp dir ------------------------------------
WORK=$(mktemp -d /tmp/slurm_local.XXXXXX)
chmod 755 "$WORK"
[ -n "$OUT" ] || OUT=$WORK/out
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
LOGS=$OUT/slurm_logs
mkdir -p "$WORK/etc" "$WORK/munge" "$WORK/munge_key" "$WORK/state" "$WORK/spool" "$LOGS"
chmod 700 "$WORK/munge_key"
export SLURM_CONF=$WORK/etc/slurm.conf
NODE=$(hostname -s)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)

cat > "$SLURM_CONF" <<EOF
# single-node Slurm for bench/slurm_local.sh (everything as root, no accounting, no cgroups)
ClusterName=rlplastic_local
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$WORK/munge/munge.socket.2
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
# jobs are requeueable only when they ask (sbatch --requeue, which configs/hydra/launcher/slurm.yaml sets)
JobRequeue=0
# SIGTERM -> SIGKILL grace of a killed or requeued job: time for the trainer's checkpoint
KillWait=30
# finished jobs stay visible to scontrol (their restart count) for the checks
MinJobAge=900
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll every 0.5 s until COMMAND succeeds
    local seconds=$1 what=$2 i
    shift 2
    for i in $(seq 1 $((seconds * 2))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
    abort "$what did not come up within ${seconds}s (logs in $LOGS)"
}

log "starting munged, slurmctld and slurmd (node $NODE, $CPUS CPUs, partition $PARTITION, port $CTLD_PORT)"
dd if=/dev/urandom of="$WORK/munge_key/munge.key" bs=1024 count=1 status=none && chmod 400 "$WORK/munge_key/munge.key"
munged -F --force --socket="$WORK/munge/munge.socket.2" --key-file="$WORK/munge_key/munge.key" \
    --pid-file="$WORK/munge/munged.pid" --seed-file="$WORK/munge/munged.seed" \
    --log-file="$LOGS/munged.log" >"$LOGS/munged.out" 2>&1 &
MUNGED_PID=$!
wait_for 15 munged test -S "$WORK/munge/munge.socket.2"
slurmctld -D -f "$SLURM_CONF" >"$LOGS/slurmctld.out" 2>&1 &
CTLD_PID=$!
ctld_up() { scontrol ping | grep -q "is UP"; }
wait_for 30 slurmctld ctld_up
slurmd -D -f "$SLURM_CONF" -N "$NODE" >"$LOGS/slurmd.out" 2>&1 &
SLURMD_PID=$!
node_idle() { [ "$(sinfo -h -n "$NODE" -o %T)" = idle ]; }
wait_for 60 "slurmd (node idle)" node_idle
log "slurm is up: $(sinfo -h -o '%P %a %D %T %C')  (CPUs allocated/idle/other/total)"

# --- the sweep ---------------------------------------------------------------------------------------
SWEEP_DIR=$OUT/sweeps/slurm_local
SUBMITIT=$SWEEP_DIR/.submitit
RUNS=()
for variant in default rr=adaptive; do for seed in 1 2; do RUNS+=("$SWEEP_DIR/cartpole_balance/$variant/seed$seed"); done; done
SWEEP=(
    "$PYTHON" "$ROOT/train.py" -m task=cartpole_balance obs_type=states aug=none rr=static,adaptive seed=1,2
    device=cpu num_threads=1 progress=false save_video=false hidden_dim=32 feature_dim=16 batch_size=32
    num_seed_frames=1000 num_expl_steps=500 "stddev_schedule='linear(1.0,0.1,3000)'" log_every_frames=500
    replay_buffer_size=10000 num_train_frames=$FRAMES eval_every_frames=2000 num_eval_episodes=1
    save_every_frames=$SAVE_EVERY sweep_root="$OUT/sweeps" sweep_name=slurm_local
    hydra/launcher=slurm hydra.launcher.partition=$PARTITION hydra.launcher.gpus_per_node=null
    hydra.launcher.cpus_per_task=1 hydra.launcher.mem_gb=null hydra.launcher.timeout_min=30
)
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MUJOCO_GL=${MUJOCO_GL:-egl}
cd "$ROOT" || abort "cannot cd to $ROOT"

job_dirs() {  # the array tasks submitted so far (submitit's folder per task: <array job>_<index>)
    [ -d "$SUBMITIT" ] && find "$SUBMITIT" -mindepth 1 -maxdepth 1 -type d -name '*_*' -printf '%f\n' | sort -V
}
job_of_run() {  # the Slurm job (array task id) whose log names this run dir, among the given jobs
    local run=$1 job
    shift
    for job in "$@"; do
        grep -qFx "rlplastic: run dir $run" "$SUBMITIT/$job/${job}_0_log.out" 2>/dev/null && { echo "$job"; return; }
    done
}
ckpt_frame() {  # the frame of the run's committed checkpoint (the pointer's top-level "frame"), or nothing
    [ -e "$1/checkpoint.json" ] || return 0
    "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["frame"])' "$1/checkpoint.json" 2>/dev/null
}

REQUEUED_JOB="" REQUEUED_RUN="" REQUEUE_FRAME="" RELEASED=0 SWEEP_STUCK=0
run_sweep() {  # run_sweep LOG REQUEUE(0|1): the sweep command in the background, watched; sets SWEEP_RC
    local logfile=$1 requeue=$2 start=$SECONDS seen_jobs=0 empty_since="" run job frame state
    "${SWEEP[@]}" >"$logfile" 2>&1 &
    SWEEP_PID=$!
    while kill -0 "$SWEEP_PID" 2>/dev/null; do
        if [ "$requeue" = 1 ] && [ -z "$REQUEUED_JOB" ]; then
            for run in "${RUNS[@]}"; do  # the first run with a checkpoint that has not finished: pre-empt it
                frame=$(ckpt_frame "$run")
                [ -n "$frame" ] && [ "$frame" -gt 0 ] && [ ! -e "$run/run_complete.json" ] || continue
                # shellcheck disable=SC2046
                job=$(job_of_run "$run" $(job_dirs))
                [ -n "$job" ] || continue
                log "run ${run#"$SWEEP_DIR"/} (job $job) has a checkpoint at frame $frame: scontrol requeue $job"
                if scontrol requeue "$job"; then
                    REQUEUED_JOB=$job REQUEUED_RUN=$run REQUEUE_FRAME=$frame
                else
                    fail "scontrol requeue $job was refused"
                    requeue=0
                fi
                break
            done
        elif [ -n "$REQUEUED_JOB" ] && [ $RELEASED = 0 ]; then
            state=$(squeue -h -j "$REQUEUED_JOB" -o %T 2>/dev/null)
            if [ "$state" = PENDING ]; then
                # Slurm holds a requeued job ~2 minutes before it may start again (real clusters too): skip that
                scontrol update JobId="$REQUEUED_JOB" StartTime=now && RELEASED=1
                log "job $REQUEUED_JOB is requeued ($(scontrol show job "$REQUEUED_JOB" | grep -o 'Restarts=[0-9]*')," \
                    "state PENDING); released its requeue hold"
            fi
        fi
        if [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
            seen_jobs=1 empty_since=""
        elif [ $seen_jobs = 1 ]; then  # nothing queued, yet the launcher waits: a job died without a result
            [ -n "$empty_since" ] || empty_since=$SECONDS
            if [ $((SECONDS - empty_since)) -ge 30 ]; then
                fail "the queue is empty but the sweep is still waiting (a job ended without a result; see $SUBMITIT)"
                SWEEP_STUCK=1
                stop_pid "$SWEEP_PID" "the sweep"
            fi
        fi
        if [ $((SECONDS - start)) -ge "$SWEEP_TIMEOUT" ]; then
            fail "the sweep ran past ${SWEEP_TIMEOUT}s"
            SWEEP_STUCK=1
            stop_pid "$SWEEP_PID" "the sweep"
        fi
        sleep 0.5
    done
    wait "$SWEEP_PID"
    SWEEP_RC=$?
    SWEEP_PID=""
}

queue_drained() { [ -z "$(squeue -h -o %i)" ]; }

log "sweep 1: ${SWEEP[*]:1}"
run_sweep "$OUT/sweep1.log" 1
FIRST_JOBS=$(job_dirs | tr '\n' ' ')
log "sweep 1 exited with $SWEEP_RC; jobs: $FIRST_JOBS"
sweep_tail() { grep -v -e sacct -e "accounting storage is disabled" "$1" | tail -20; }  # no accounting here
[ $SWEEP_STUCK = 0 ] || { sweep_tail "$OUT/sweep1.log"; finish "sweep 1 did not finish"; }
[ "$SWEEP_RC" = 0 ] || { fail "sweep 1 exited with $SWEEP_RC"; sweep_tail "$OUT/sweep1.log"; }
# the launcher returns once every job has a result; a requeued job may still be queued or running (a run
# that returns normally after SIGTERM leaves submitit a result before its requeue runs)
still=$(squeue -h -o '%i %T' | tr '\n' ' ')
[ -z "$still" ] || log "jobs still in the queue as the launcher returned ($still): waiting for them to end"
for i in $(seq 1 $((SWEEP_TIMEOUT * 2))); do queue_drained && break; sleep 0.5; done
queue_drained || fail "jobs still queued ${SWEEP_TIMEOUT}s after sweep 1: $(squeue -h -o '%i %T' | tr '\n' ' ')"
for run in "${RUNS[@]}"; do
    # shellcheck disable=SC2086
    log "  ${run#"$SWEEP_DIR"/}: job $(job_of_run "$run" $FIRST_JOBS)"
done

# --- checks: the requeue, the resume, the completed sweep ---------------------------------------------
summary_field() {  # summary_field LOGFILE INDEX FIELD: a field of the INDEX-th "rlplastic: {...}" line (-1: last)
    "$PYTHON" - "$@" <<'EOF'
import json, sys
lines = [l[len("rlplastic: "):] for l in open(sys.argv[1], errors="replace") if l.startswith("rlplastic: {")]
try:
    print(json.loads(lines[int(sys.argv[2])]).get(sys.argv[3]))
except (IndexError, ValueError):
    print("none")
EOF
}
json_field() { "$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))' "$1" "$2" 2>/dev/null || echo none; }
is_positive_int() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }

RESUMED=none
if [ -z "$REQUEUED_JOB" ]; then
    fail "no job was requeued (no run had a checkpoint while it ran)"
else
    JOB_LOG=$SUBMITIT/$REQUEUED_JOB/${REQUEUED_JOB}_0_log.out
    JOB_ERR=$SUBMITIT/$REQUEUED_JOB/${REQUEUED_JOB}_0_log.err
    restarts=$(scontrol show job "$REQUEUED_JOB" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
    is_positive_int "${restarts:-0}" || fail "job $REQUEUED_JOB shows Restarts=${restarts:-?} (expected >= 1)"
    first_status=$(summary_field "$JOB_LOG" 0 status)
    first_frame=$(summary_field "$JOB_LOG" 0 frame)
    first_exit=$(grep -ho 'Exited with exit code [0-9]*' "$JOB_LOG" "$JOB_ERR" | head -1 | grep -o '[0-9]*$')
    results=$(grep -c "Exiting after successful completion" "$JOB_LOG")
    log "job $REQUEUED_JOB, first run: SIGTERM -> status $first_status at frame $first_frame, exit code" \
        "${first_exit:-0} (the requeue does not depend on it); it $([ "$results" -ge 2 ] && echo left ||
        echo 'did not leave') a result for the launcher"
    RESUMED=$(summary_field "$JOB_LOG" -1 resumed_from_frame)
    last_status=$(summary_field "$JOB_LOG" -1 status)
    log "job $REQUEUED_JOB, restart $restarts: status $last_status, resumed_from_frame $RESUMED"
    if [ "$(grep -c '^rlplastic: {' "$JOB_LOG")" -lt 2 ]; then
        log "job $REQUEUED_JOB: its first run printed no summary line (only the resumed run's)"
    elif [ "$first_status" != interrupted ]; then
        fail "the requeued job's first run ended '$first_status', not interrupted"
    fi
    is_positive_int "$RESUMED" || fail "the requeued job's final summary has resumed_from_frame=$RESUMED (expected > 0)"
    [ "$last_status" = complete ] || fail "the requeued job's last run ended '$last_status'"
    marker=$(json_field "$REQUEUED_RUN/run_complete.json" resumed_from_frame)
    is_positive_int "$marker" || fail "$REQUEUED_RUN/run_complete.json has resumed_from_frame=$marker (expected > 0)"
    if is_positive_int "$RESUMED" && [ "$RESUMED" -lt "$REQUEUE_FRAME" ]; then
        fail "resumed from frame $RESUMED, before the checkpoint at frame $REQUEUE_FRAME seen at the requeue"
    fi
fi
complete=0
for run in "${RUNS[@]}"; do
    if [ -e "$run/run_complete.json" ] && [ "$(json_field "$run/run_complete.json" frame)" = "$FRAMES" ]; then
        complete=$((complete + 1))
    else
        fail "${run#"$SWEEP_DIR"/} has no run_complete.json at frame $FRAMES"
    fi
done
log "sweep 1: $complete/${#RUNS[@]} run dirs have run_complete.json"

# --- sweep 2: the same command again trains nothing -----------------------------------------------
sizes() { local run; for run in "${RUNS[@]}"; do stat -c '%s %Y' "$run/scalars.csv" "$run/checkpoint.json" 2>/dev/null; done; }
BEFORE=$(sizes)
log "sweep 2: the same command again"
run_sweep "$OUT/sweep2.log" 0
[ "$SWEEP_RC" = 0 ] || { fail "sweep 2 exited with $SWEEP_RC"; sweep_tail "$OUT/sweep2.log"; }
for i in $(seq 1 120); do queue_drained && break; sleep 0.5; done
skipped=0 trained=0 second_jobs=""
for job in $(job_dirs); do
    case " $FIRST_JOBS " in *" $job "*) continue ;; esac
    second_jobs="$second_jobs $job"
    grep -q "already finished" "$SUBMITIT/$job/${job}_0_log.out" 2>/dev/null && skipped=$((skipped + 1))
    grep -q "^rlplastic: run dir" "$SUBMITIT/$job/${job}_0_log.out" 2>/dev/null && trained=$((trained + 1))
done
log "sweep 2 exited with $SWEEP_RC; jobs:$second_jobs; $skipped printed 'already finished', $trained trained"
grep -h "already finished" "$SUBMITIT"/*/*_0_log.out 2>/dev/null | sed 's/^/[slurm_local]   /'
[ "$skipped" = "${#RUNS[@]}" ] || fail "sweep 2: $skipped of ${#RUNS[@]} jobs printed 'already finished'"
[ "$trained" = 0 ] || fail "sweep 2: $trained job(s) started training"
[ "$(sizes)" = "$BEFORE" ] || fail "sweep 2 changed a run dir's scalars.csv or checkpoint"

finish "job $REQUEUED_JOB requeued at checkpoint frame $REQUEUE_FRAME resumed from frame $RESUMED;" \
    "$complete/${#RUNS[@]} runs complete; re-run skipped $skipped/${#RUNS[@]}"
