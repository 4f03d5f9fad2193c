#!/usr/bin/env bash
# One-shot GPU check (about 5 minutes, at most 10) for a session lent a CUDA machine (H200).
# Run from the repository root; needs python3 with a CUDA torch (no install step: PYTHONPATH=src).
#
#   bash benchmarks/gpu_check.sh                   # results in $OUT (device tool) or ./gpu_check_out
#   DEVICE=cpu QUICK=1 bash benchmarks/gpu_check.sh  # smoke test of the script itself (tiny sizes)
#
# Writes results.jsonl (one JSON object per measurement, each with a "check" name), log.txt and
# errors.txt (the stderr of any failed step) into the output folder. Steps, most important first, each with
# its own time limit so that one failure does not eat the budget:
#   1  environment (nvidia-smi, torch, device)
#   2  mnist training step, batch 32: fp32, the straightforward path (--reference: the before), bf16,
#      torch.compile, torch.compile with CUDA graphs (mode reduce-overhead)
#   3  the paper's mnist budget: a real 2,000-step `vqdraw train` run (mnist-embedded, batch 32,
#      evaluation and checkpoints as configured), timed; 50,000 steps EXTRAPOLATED x25
#   4  bf16 vs fp32 codes on the model trained in step 3 (bf16_agreement.py)
#   5  encode/decode throughput at batch 256, fp32 and bf16, beam 4 if available (bench_codec.py)
#   6  cifar10 at its micro-batch (64, 100 stages, per-segment checkpointing): fp32 and bf16
#   7  the data-parallel path on one GPU: torchrun --nproc_per_node=1 (NCCL), 20 steps
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
DEV=${DEVICE:-cuda}
# sizes: normal, or tiny for a smoke test of this script (QUICK=1)
if [ "${QUICK:-0}" = 1 ]; then
  S_STEPS=3; S_WARM=1; BUDGET=20; CIFAR=(--stages 2); REPS=2; COUNT=50
else
  S_STEPS=200; S_WARM=20; BUDGET=2000; CIFAR=(); REPS=20; COUNT=500
fi
RES="$OUT/results.jsonl"
LOG="$OUT/log.txt"
: >"$RES"
: >"$LOG"
T0=$(date +%s)

log() { echo "[$(($(date +%s) - T0))s] $*" | tee -a "$LOG"; }

# step NAME LIMIT_S CMD...: run CMD, append its last stdout line (JSON) to results.jsonl
step() {
  local name=$1 limit=$2
  shift 2
  log "start $name: $*"
  local t=$(date +%s)
  if timeout "$limit" "$@" >"$OUT/.stdout" 2>"$OUT/.stderr"; then
    local line
    line=$(tail -n 1 "$OUT/.stdout")
    "$PY" - "$name" "$line" >>"$RES" <<'EOF'
import json, sys
name, line = sys.argv[1], sys.argv[2]
try:
    obj = json.loads(line)
except ValueError:
    obj = {"output": line}
obj["check"] = name
print(json.dumps(obj, sort_keys=True))
EOF
    log "done  $name in $(($(date +%s) - t))s"
  else
    local rc=$?
    log "FAIL  $name rc=$rc after $(($(date +%s) - t))s (stderr in errors.txt)"
    { echo "===== $name (rc=$rc)"; tail -c 8000 "$OUT/.stderr"; } >>"$OUT/errors.txt"
    echo "{\"check\": \"$name\", \"failed\": true, \"rc\": $rc}" >>"$RES"
  fi
}

# 1 environment
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | tee -a "$LOG"
step env 60 "$PY" -c "import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, 'cuda': torch.version.cuda, 'gpu': torch.cuda.get_device_name(0) if c else None, 'cudnn': torch.backends.cudnn.version() if c else None}))"

# 2 mnist training step (batch 32)
step train_mnist_fp32 90 "$PY" benchmarks/bench_train.py --device "$DEV" --preset mnist --steps "$S_STEPS" --warmup "$S_WARM"
step train_mnist_reference 90 "$PY" benchmarks/bench_train.py --device "$DEV" --preset mnist --steps "$S_STEPS" --warmup "$S_WARM" --reference --no-flops --no-calibration
step train_mnist_bf16 90 "$PY" benchmarks/bench_train.py --device "$DEV" --preset mnist --steps "$S_STEPS" --warmup "$S_WARM" --precision bf16 --no-calibration
step train_mnist_compile 240 "$PY" benchmarks/bench_train.py --device "$DEV" --preset mnist --steps "$S_STEPS" --warmup "$S_WARM" --compile --no-calibration
step train_mnist_cudagraphs 240 "$PY" benchmarks/bench_train.py --device "$DEV" --preset mnist --steps "$S_STEPS" --warmup "$S_WARM" --compile reduce-overhead --no-calibration

# 3 the paper's mnist budget, measured on 2,000 real steps and extrapolated to 50,000
RUN="$OUT/mnist2k"
rm -rf "$RUN"
log "start mnist_${BUDGET}_steps"
t=$("$PY" -c "import time; print(time.time())")
if timeout 240 "$PY" -m vqdraw.cli train --preset mnist --dataset mnist-embedded --steps "$BUDGET" \
    --device "$DEV" --no-progress --run "$RUN" --save-every 1000 >"$OUT/.stdout" 2>"$OUT/.stderr"; then
  "$PY" - "$t" "$RUN" "$BUDGET" >>"$RES" <<'EOF'
import json, sys, time
t0, run, n = float(sys.argv[1]), sys.argv[2], int(sys.argv[3])
dt = time.time() - t0
rows = [json.loads(l) for l in open(run + "/metrics.jsonl")]
last = [r for r in rows if "test_mse" in r][-1]
print(json.dumps({"check": f"mnist_{n}_steps", "wall_s": dt, "steps": n,
                  "s_per_step_incl_eval_ckpt": dt / n,
                  "EXTRAPOLATED_50000_steps_s": dt * 50000 / n,
                  "note": f"the 50,000-step time is {50000 // n} x the measured {n}-step run (incl. "
                          "start-up, evaluation every 100 steps, checkpoints with pictures)",
                  "test_mse": last["test_mse"], "final_train_loss": rows[-1]["loss"]}))
EOF
  log "done  mnist_${BUDGET}_steps"
else
  log "FAIL  mnist_${BUDGET}_steps"
  { echo "===== mnist_budget"; tail -c 8000 "$OUT/.stderr"; } >>"$OUT/errors.txt"
fi

# 4 bf16 vs fp32 codes on the trained model
if [ -f "$RUN/LATEST" ]; then
  step bf16_agreement 60 "$PY" benchmarks/bf16_agreement.py "$RUN" --device "$DEV" --count "$COUNT"
fi

# 5 codec throughput (batch 256)
MODEL_ARG=()
[ -f "$RUN/LATEST" ] && MODEL_ARG=(--model "$RUN")
step codec_fp32 90 "$PY" benchmarks/bench_codec.py --device "$DEV" "${MODEL_ARG[@]}" --reps "$REPS" --beam 4 --no-calibration
step codec_bf16 90 "$PY" benchmarks/bench_codec.py --device "$DEV" "${MODEL_ARG[@]}" --reps "$REPS" --precision bf16 --no-calibration

# 6 cifar10 micro-batch (64 images x 100 stages, checkpointed per segment)
step train_cifar10_micro_fp32 150 "$PY" benchmarks/bench_train.py --device "$DEV" --preset cifar10 --steps 3 --warmup 1 "${CIFAR[@]}" --no-calibration
step train_cifar10_micro_bf16 120 "$PY" benchmarks/bench_train.py --device "$DEV" --preset cifar10 --steps 3 --warmup 1 "${CIFAR[@]}" --precision bf16 --no-calibration

# 7 data-parallel path (NCCL) on one GPU
rm -rf "$OUT/ddp1"
step ddp_nccl_1gpu 90 "$PY" -m torch.distributed.run --standalone --nproc_per_node=1 -m -- vqdraw.cli train \
  --preset mnist --dataset mnist-embedded --steps 20 --log-every 10 --eval-every 20 --save-every 20 \
  --device "$DEV" --no-progress --run "$OUT/ddp1"
rm -rf "$OUT/ddp1" "$RUN" "$OUT/.stdout" "$OUT/.stderr"  # only results.jsonl, log.txt, errors.txt remain
log "all done in $(($(date +%s) - T0))s"
