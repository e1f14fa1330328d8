#!/usr/bin/env bash
# The GPU stage of the bundled PDN models: fine-tune x2, x4, x8 and x16 at once
# on one CUDA GPU, from the bundled checkpoints, on the realistic degradation family.
#
#   scripts/gpu_train.sh OUT_DIR [BUDGET_SECONDS]
#
# DATA (default /work/shared/data/train) holds bsd200/ and t91/ with captions.csv.
# Each scale first trains PROBE_STEPS steps to measure its speed beside the
# others, then a new run of as many steps as fit in BUDGET_SECONDS (so the
# cosine schedule reaches its end); a run still going at BUDGET+60 s gets
# SIGTERM, which saves its checkpoint. Batches are drawn by --workers processes
# per run (the CPU-side degradations, not the GPU, limit small models).
# Writes OUT_DIR/pdn-xS/ (model, training state, train.log) and OUT_DIR/*.log.
set -uo pipefail
OUT_DIR=${1:?usage: scripts/gpu_train.sh OUT_DIR [BUDGET_SECONDS]}
BUDGET=${2:-400}
DATA=${DATA:-/work/shared/data/train}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-32}
PROBE_STEPS=${PROBE_STEPS:-100}
SCALES=${SCALES:-"2 4 8 16"}
declare -A PATCH=([2]=48 [4]=32 [8]=24 [16]=12)       # LR patch side: HR 96, 128, 192, 192 px
declare -A WORKERS=([2]=2 [4]=3 [8]=4 [16]=4)        # 13 batch workers + 4 trainers on 16 cores
WEIGHTS=$("$PY" -c "from napari_textsr.loading import WEIGHTS_DIR; print(WEIGHTS_DIR)") || exit 1

run() {  # SCALE OUT STEPS TIME_LIMIT [more options]
  local s=$1 out=$2 steps=$3 limit=$4
  shift 4
  timeout -s TERM -k 30 "$limit" "$PY" -m napari_textsr train \
    --data "$DATA/bsd200" --data "$DATA/t91" --method pdn --degradations realistic \
    --scale "$s" --patch "${PATCH[$s]}" --batch-size "$BATCH" --workers "${WORKERS[$s]}" \
    --init "$WEIGHTS/pdn-x$s.textsr.safetensors" --name "pdn-x$s" \
    --device "$DEVICE" --threads 1 --no-progress --out "$out" --steps "$steps" "$@"
}

mkdir -p "$OUT_DIR"
start=$(date +%s)
for s in $SCALES; do
  run "$s" "$OUT_DIR/probe-x$s" "$PROBE_STEPS" 600 --val-every 100000 --checkpoint-every 100000 --overwrite \
    >"$OUT_DIR/probe-x$s.log" 2>&1 &
done
wait
declare -A STEPS
for s in $SCALES; do
  rate=$(grep -oE '[0-9.]+ images/s' "$OUT_DIR/probe-x$s.log" | tail -1 | cut -d' ' -f1)
  if [ -z "$rate" ]; then
    echo "probe at x$s failed:" >&2
    tail -30 "$OUT_DIR/probe-x$s.log" >&2
    exit 1
  fi
  STEPS[$s]=$("$PY" -c "print(max(50, int($rate / $BATCH * $BUDGET)))")
  echo "x$s: probe $rate images/s beside the others -> ${STEPS[$s]} steps"
  rm -rf "$OUT_DIR/probe-x$s"
done
echo "probes took $(( $(date +%s) - start )) s"

for s in $SCALES; do
  mkdir -p "$OUT_DIR/pdn-x$s"
  run "$s" "$OUT_DIR/pdn-x$s" "${STEPS[$s]}" $((BUDGET + 60)) --warmup 100 \
    --val-every 1000 --checkpoint-every 500 --overwrite >"$OUT_DIR/pdn-x$s/train.log" 2>&1 &
done
wait
status=0
for s in $SCALES; do
  echo "== x$s"; tail -4 "$OUT_DIR/pdn-x$s/train.log"
  [ -f "$OUT_DIR/pdn-x$s/model.textsr.safetensors" ] || status=1
done
echo "training took $(( $(date +%s) - start )) s"
exit $status
