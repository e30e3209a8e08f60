#!/usr/bin/env bash
# One GPU check of rlplastic, sized for about 8 minutes on one GPU (an H200), then a summary table.
#
#   bench/gpu_check.sh              # on a GPU machine: sets up .venv (scripts/bootstrap.sh), needs CUDA torch
#   bench/gpu_check.sh --cpu-smoke  # the same steps at tiny sizes on CPU, under a minute (CI: tests/test_gpu_check.py)
#
# Steps (each one's output goes to the log; a failed step is marked FAILED in the summary, the rest still run):
#   1. setup: bootstrap the venv, print torch / CUDA / GPU; stop with a clear message if CUDA is unavailable
#   2. training frames/s at the DrQ-v2 defaults (cheetah_run pixels, batch 256, RR 0.5; 4000 seed frames, then
#      4000 timed frames; eval, video, TensorBoard, checkpoints off) via bench/throughput.py, for host replay
#      (replay_device=cpu), device replay (replay_device=cuda) and compile=true (device replay; compiled before the
#      timing, its seconds reported), with the time split
#   3. replay batch assembly (bench/replay_sample.py): host, prefetched and device-resident sampling
#   4. monitor overhead (bench/monitor_overhead.py, short): off / FAU (default every update) / default / full
#   5. the CUDA cases of the hook and replay tests: pytest tests/test_monitor_hooks.py tests/test_replay*.py
#   6. a learning sanity run: cartpole_balance from pixels, 30k frames (3 evals of 3 episodes), its last eval return
#
# --cpu-smoke runs the same scripts and code paths on CPU at tiny sizes: the device-replay path is the
# device-resident DeviceReplayBuffer with CPU storage in step 3 (train.py's replay_device=cuda needs CUDA),
# step 5 only collects the tests, and compile=true is left to tests/test_compile.py (a cold Inductor compile
# takes minutes on 2 cores) unless GPU_CHECK_SMOKE_COMPILE=1.
# The full log goes to $OUT/gpu_check.log when $OUT is set (else a temporary file, named at the end).
# PYTHON=/path/to/python skips the bootstrap and uses that interpreter.
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=0
if [ "${1:-}" = "--cpu-smoke" ]; then SMOKE=1; elif [ -n "${1:-}" ]; then
  echo "usage: bench/gpu_check.sh [--cpu-smoke]" >&2; exit 2
fi
if [ -n "${OUT:-}" ]; then mkdir -p "$OUT"; LOG="$OUT/gpu_check.log"; else LOG=$(mktemp /tmp/gpu_check.XXXXXX.log); fi
: > "$LOG"
export MUJOCO_GL=${MUJOCO_GL:-egl}
SUMMARY=()
say() { echo "$*" | tee -a "$LOG"; }
row() { SUMMARY+=("$(printf '%-22s %s' "$1" "$2")"); }
# run a step: output to the log (and the console), returns its status
step() {
  local name=$1 start=$SECONDS rc; shift
  say "=== $name: $*"
  "$@" 2>&1 | tee -a "$LOG"; rc=${PIPESTATUS[0]}
  say "=== $name: exit $rc after $((SECONDS - start)) s"
  return "$rc"
}

# --- 1. setup -----------------------------------------------------------------------------------------
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
else
  step bootstrap bash scripts/bootstrap.sh || { say "gpu_check: scripts/bootstrap.sh failed (see above)"; exit 1; }
  PY=.venv/bin/python
fi
INFO=$("$PY" -c 'import torch
ok = torch.cuda.is_available()
name = torch.cuda.get_device_name(0) if ok else "none"
print(f"torch {torch.__version__} cuda_build={torch.version.cuda} cuda_available={ok} gpu={name}")' 2>&1)
say "$INFO"
if [ "$SMOKE" = 1 ]; then
  row "mode" "cpu-smoke (tiny sizes; figures are not performance)"
elif ! echo "$INFO" | grep -q 'cuda_available=True'; then
  say "gpu_check: torch.cuda.is_available() is False: this torch is a CPU build (cuda_build=None) or no GPU/driver is"
  say "  visible (check nvidia-smi). For the CUDA wheel: .venv/bin/pip install --force-reinstall torch==2.13.0 from the"
  say "  standard index (PyPI), or TORCH_INDEX_URL=https://download.pytorch.org/whl/cu<version> scripts/bootstrap.sh."
  exit 3
else
  row "mode" "gpu"
fi
row "torch" "$(echo "$INFO" | sed 's/^torch //')"

# --- 2. training throughput ---------------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
  TP_ARGS=(--seed-steps 20 --measure-steps 10)
  TP_SIZE=(device=cpu batch_size=8 hidden_dim=16 feature_dim=8 action_repeat=8 fast_render=true monitor=off)
else
  TP_ARGS=(--seed-steps 2000 --measure-steps 2000)  # 4000 seed frames (the DrQ-v2 default) + 4000 timed frames
  TP_SIZE=(device=cuda)
fi
throughput() {  # label, overrides...
  local label=$1; shift
  local out
  out=$(step "throughput $label" "$PY" bench/throughput.py "${TP_ARGS[@]}" "${TP_SIZE[@]}" "$@")
  local rc=$?
  local fps ms split comp
  comp=$(echo "$out" | sed -n 's/^compile: \([0-9.]*\) s.*/\1/p')
  fps=$(echo "$out" | sed -n 's/^throughput: \([0-9.]*\) frames\/s.*/\1/p')
  ms=$(echo "$out" | sed -n 's/^  update .* \([0-9.]*\) ms\/call$/\1/p')
  split=$(echo "$out" | awk '/^  (env|sample|update|act|replay_add|monitor|checkpoint|other) / {printf "%s %s ", $1, $4}')
  if [ $rc -ne 0 ] || [ -z "$fps" ]; then row "fps $label" "FAILED (rc=$rc, see log)"; return; fi
  row "fps $label" "$fps frames/s, update ${ms:-?} ms${comp:+, compiled in $comp s before timing}"
  row "  split $label" "$split"
}
throughput "host replay" replay_device=cpu
if [ "$SMOKE" = 1 ]; then
  row "fps device replay" "not run on CPU (replay_device=cuda needs CUDA; DeviceReplayBuffer is covered below)"
  if [ "${GPU_CHECK_SMOKE_COMPILE:-0}" = 1 ]; then throughput "compiled" replay_device=cpu compile=true; else
    row "fps compiled" "not run in the smoke (tests/test_compile.py covers compile=true)"; fi
else
  throughput "device replay" replay_device=cuda
  throughput "compiled" replay_device=cuda compile=true
fi

# --- 3. replay batch assembly -------------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then RS=(--device cpu --capacity 2000 --batch-size 8 --iters 5 --update-ms 1);
else RS=(--device cuda --capacity 50000 --iters 30); fi
out=$(step "replay sample" "$PY" bench/replay_sample.py "${RS[@]}"); rc=$?
resident=$(echo "$out" | grep -m1 'device-resident' | tr -s ' ')
if [ $rc -ne 0 ] || [ -z "$resident" ]; then row "replay sample" "FAILED (rc=$rc, see log)"; else
  row "replay device-resident" "$resident"; fi

# --- 4. monitor overhead ------------------------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then
  MO=(--device cpu --batch-size 8 --hidden-dim 16 --feature-dim 8 --updates 2 --block 1 --probes 1 --replay-size 200
      --probe-set probe_batch_size=16 --probe-set hessian_iters=4 --probe-set hessian_directions_k=2
      --probe-set hutchinson_probes=2 --probe-set figures=false)
else MO=(--device cuda --batch-size 256 --updates 60 --block 5 --probes 2); fi
out=$(step "monitor overhead" "$PY" bench/monitor_overhead.py "${MO[@]}"); rc=$?
mon=$(echo "$out" | "$PY" -c 'import re, sys
rows = {}
for line in sys.stdin:
    m = re.match(r"^(off|fau alone|default|full) +[0-9.]+ +(-?[0-9.]+%)", line)
    if m:
        rows[m.group(1)] = m.group(2)
print(" ".join(f"{k}={v}" for k, v in rows.items()))')
if [ $rc -ne 0 ] || [ -z "$mon" ]; then row "monitor overhead" "FAILED (rc=$rc, see log)"; else
  row "monitor overhead" "$mon (vs off, per 1k agent steps)"; fi

# --- 5. CUDA host-sync and replay tests ---------------------------------------------------------------
if [ "$SMOKE" = 1 ]; then PT=(--collect-only -q); else PT=(-q -rs); fi
out=$(step "pytest" "$PY" -m pytest "${PT[@]}" -p no:cacheprovider tests/test_monitor_hooks.py tests/test_replay*.py)
rc=$?
tail=$(echo "$out" | grep -E '([0-9]+ (passed|failed|skipped|error|tests? collected))' | tail -1 | tr -s ' =' ' ')
row "tests hooks+replay" "${tail:-no result} (rc=$rc)"

# --- 6. learning sanity -------------------------------------------------------------------------------
RUN_DIR=$(mktemp -d /tmp/gpu_check_run.XXXXXX)
if [ "$SMOKE" = 1 ]; then
  LEARN=(device=cpu action_repeat=8 fast_render=true batch_size=8 hidden_dim=16 feature_dim=8 num_seed_frames=200
         num_train_frames=320 eval_every_frames=320 num_eval_episodes=1 replay_buffer_size=2000 monitor=off)
else
  LEARN=(device=cuda num_train_frames=30000 eval_every_frames=15000 num_eval_episodes=3)
fi
step "learning" "$PY" train.py task=cartpole_balance progress=false save_video=false use_tb=false \
  save_every_frames=0 "${LEARN[@]}" "run_dir=$RUN_DIR/run" >/dev/null
rc=$?
learned=$("$PY" -c 'import sys
from rlplastic.logger import read_scalars_csv
series = read_scalars_csv(sys.argv[1] + "/run/scalars.csv")["eval/episode_reward"]
frame, value = series[-1]
print(f"eval return {value:.1f} at frame {int(frame)} (first eval {series[0][1]:.1f})")' "$RUN_DIR" 2>>"$LOG")
if [ $rc -ne 0 ] || [ -z "$learned" ]; then row "learning cartpole_bal" "FAILED (rc=$rc, see log)"; else
  row "learning cartpole_bal" "$learned"; fi
rm -rf "$RUN_DIR"

# --- summary ------------------------------------------------------------------------------------------
say ""
say "=== gpu_check summary ==="
for line in "${SUMMARY[@]}"; do say "$line"; done
say "log: $LOG"
