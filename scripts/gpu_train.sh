#!/usr/bin/env bash
# The GPU stage of the bundled models: continue several of them at once on one
# CUDA GPU, each with its own recorded recipe (the degradation family, caption
# policy, losses, prompt encoder, patch, learning rate and weight average of its
# last training stage: `textsr train --init NAME --recipe-from init`).
#
#   scripts/gpu_train.sh OUT_DIR [BUDGET_SECONDS]
#
# Environment (defaults in brackets):
#   MODELS   the bundled models to continue ["pdn-x2 pdn-x4 pdn-x8 pdn-x16"]; the models
#            for JPEG inputs (pdn-x2-jpeg ...) may be named too
#   DATA     folder holding bsd200/ and t91/ with captions.csv [/work/shared/data/train]
#   BATCH    global batch size of every run [128]: a step has a fixed cost (docs/training.md,
#            "Batch workers and GPUs"), so a large batch keeps the GPU busy. The peak
#            learning rate stays the recipe's (1e-4 for the bundled PDNs, tuned at batch 16),
#            with 100 warm-up steps and a fresh cosine schedule; EXTRA="--lr ..." changes it
#   EXTRA    more `textsr train` options for every run, e.g. "--model-option n_feats=64"
#            (a wider PDN whose new channels start at zero) or "--lr 2e-4"
#   CPUS     cores for the batch workers, shared out between the runs [nproc]
#   PROBE_STEPS, DEVICE [cuda], PYTHON [python3]
#   PACK_TO  a folder (e.g. the device tool's $OUT) to receive the finished runs as one tar
#            archive split into 15 MiB parts (that tool brings back at most 8 files of
#            16 MiB; four PDN runs make 4 parts): `cat gpu-stage.tar.part-* | tar -xf -`
#            unpacks OUT_DIR's MODEL folders
#   PROFILE=1  first time a step of the first model alone at batch 32 and at BATCH
#            (benchmarks/profile_train_step.py: ms per step, the operations that take it;
#            the bundled model as it is, without EXTRA's changes) into
#            OUT_DIR/profile-bN.json (and PACK_TO: two files more), about a minute
#   DRY_RUN=1  print the commands (one per line, in order) and run nothing
#
# Each model first trains PROBE_STEPS steps to measure its speed beside the
# others, then a new run of as many steps as fit in BUDGET_SECONDS (so the
# cosine schedule reaches its end); a run still going at BUDGET+60 s gets
# SIGTERM, which saves its checkpoint. Writes OUT_DIR/MODEL/ (model, training
# state, train.log) and OUT_DIR/probe-MODEL.log.
set -uo pipefail
OUT_DIR=${1:?usage: scripts/gpu_train.sh OUT_DIR [BUDGET_SECONDS]}
BUDGET=${2:-400}
DATA=${DATA:-/work/shared/data/train}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-128}
EXTRA=${EXTRA:-}
PROBE_STEPS=${PROBE_STEPS:-60}
MODELS=${MODELS:-"pdn-x2 pdn-x4 pdn-x8 pdn-x16"}
CPUS=${CPUS:-$(nproc)}
DRY_RUN=${DRY_RUN:-0}
read -r -a models <<<"$MODELS"
[ "${#models[@]}" -ge 1 ] || { echo "MODELS names no model" >&2; exit 2; }
# One core per training process, the rest drawing batches (the CPU-side degradations).
WORKERS=$(( (CPUS - ${#models[@]}) / ${#models[@]} ))
[ "$WORKERS" -ge 1 ] || WORKERS=1

command_of() {  # MODEL OUT STEPS [more options]: the training command, one word per line
  local model=$1 out=$2 steps=$3
  shift 3
  # EXTRA is split into words on purpose.
  # shellcheck disable=SC2086
  printf '%s\n' "$PY" -m napari_textsr train \
    --data "$DATA/bsd200" --data "$DATA/t91" --init "$model" --recipe-from init \
    --batch-size "$BATCH" --workers "$WORKERS" --warmup 100 --name "$model" \
    --device "$DEVICE" --threads 1 --no-progress --out "$out" --steps "$steps" --overwrite "$@" $EXTRA
}

start_run() {  # TIME_LIMIT LOG MODEL OUT STEPS [more options]: in the background (DRY_RUN: printed)
  local limit=$1 log=$2
  shift 2
  local -a words
  mapfile -t words < <(command_of "$@")
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "${words[@]}"
    echo
    return 0
  fi
  mkdir -p "$(dirname "$log")"
  timeout -s TERM -k 30 "$limit" "${words[@]}" >"$log" 2>&1 &
}

[ "$DRY_RUN" = 1 ] || mkdir -p "$OUT_DIR"
start=$(date +%s)
if [ "${PROFILE:-0}" = 1 ] && [ "$DRY_RUN" != 1 ]; then
  for b in 32 "$BATCH"; do
    "$PY" "$(dirname "$0")/../benchmarks/profile_train_step.py" --init "${models[0]}" --device "$DEVICE" \
      --data "$DATA/bsd200" --data "$DATA/t91" --batch-size "$b" --workers "$WORKERS" --threads 1 \
      --json "$OUT_DIR/profile-b$b.json" >"$OUT_DIR/profile-b$b.log" 2>&1 || tail -20 "$OUT_DIR/profile-b$b.log" >&2
    grep -m1 "ms per step" "$OUT_DIR/profile-b$b.log"
    [ -z "${PACK_TO:-}" ] || { mkdir -p "$PACK_TO"; cp "$OUT_DIR/profile-b$b.json" "$PACK_TO/" 2>/dev/null; }
  done
  echo "profiles took $(( $(date +%s) - start )) s"
fi
probe_start=$(date +%s)
for m in "${models[@]}"; do
  start_run 600 "$OUT_DIR/probe-$m.log" "$m" "$OUT_DIR/probe-$m" "$PROBE_STEPS" \
    --val-every 100000 --checkpoint-every 100000
done
wait
declare -A STEPS
for m in "${models[@]}"; do
  if [ "$DRY_RUN" = 1 ]; then
    STEPS[$m]=STEPS
    continue
  fi
  rate=$(grep -oE '[0-9.]+ images/s' "$OUT_DIR/probe-$m.log" | tail -1 | cut -d' ' -f1)
  if [ -z "$rate" ]; then
    echo "probe of $m failed:" >&2
    tail -30 "$OUT_DIR/probe-$m.log" >&2
    exit 1
  fi
  STEPS[$m]=$("$PY" -c "print(max(200, int($rate / $BATCH * $BUDGET)))")  # past the 100 warm-up steps
  echo "$m: probe $rate images/s beside the others -> ${STEPS[$m]} steps"
  rm -rf "$OUT_DIR/probe-$m"
done
[ "$DRY_RUN" = 1 ] || echo "probes took $(( $(date +%s) - probe_start )) s"

for m in "${models[@]}"; do
  start_run $((BUDGET + 60)) "$OUT_DIR/$m/train.log" "$m" "$OUT_DIR/$m" "${STEPS[$m]}" \
    --val-every 1000 --checkpoint-every 500
done
wait
[ "$DRY_RUN" = 1 ] && exit 0
status=0
for m in "${models[@]}"; do
  echo "== $m"; tail -4 "$OUT_DIR/$m/train.log"
  [ -f "$OUT_DIR/$m/model.textsr.safetensors" ] || status=1
done
echo "training took $(( $(date +%s) - start )) s"
if [ -n "${PACK_TO:-}" ]; then
  mkdir -p "$PACK_TO"
  tar -cf - -C "$OUT_DIR" "${models[@]}" | split -b 15M - "$PACK_TO/gpu-stage.tar.part-" || status=1
  ls -l "$PACK_TO"/gpu-stage.tar.part-*
fi
exit $status
