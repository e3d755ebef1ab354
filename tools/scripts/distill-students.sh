#!/usr/bin/env bash
# The whole distillation pipeline of docs/distillation.md, as one resumable command:
# teacher bundle → teacher caches (train, val) → stage 1 → stage 2 → export → bundle →
# evaluation on every 2D test split. Every step resumes where it stopped (rerun the same
# command after a reboot or on a fresh machine: finished steps are skipped).
#
#   tools/scripts/distill-students.sh [STUDENT ...]        (default: edge-s)
#
# Environment: EDGESEG_SHARED (default ../shared), DISTILL_DIR (default target/distill),
# EPOCHS1 / EPOCHS2 (default 5 / 6), THREADS (tract/candle threads per process; default 1
# when several students train side by side, else all cores), VERSION (default 0.1.0).
set -euo pipefail
cd "$(dirname "$0")/../.."

SHARED=${EDGESEG_SHARED:-../shared}
W=${DISTILL_DIR:-target/distill}
EPOCHS1=${EPOCHS1:-5}
EPOCHS2=${EPOCHS2:-6}
VERSION=${VERSION:-0.1.0}
STUDENTS=("${@:-edge-s}")
DATASETS=(cvc_clinicdb ddti_thyroid_us hc18_fetal_us)

for d in "${DATASETS[@]}"; do
  [ -f "$SHARED/data/$d/manifest.csv" ] || { echo "missing $SHARED/data/$d (set EDGESEG_SHARED)" >&2; exit 1; }
done
mkdir -p "$W/bin"
log() { echo "[$(date -u +%H:%M:%S)] $*"; }

# A private copy of the binary, so that rebuilding the workspace never changes a running job.
cargo build -q -p edgeseg-tools
cp "${CARGO_TARGET_DIR:-target}/debug/edgeseg-tools" "$W/bin/edgeseg-tools.new" && mv "$W/bin/edgeseg-tools.new" "$W/bin/edgeseg-tools"
T="$W/bin/edgeseg-tools"

if [ ! -f "$W/litemedsam.esb" ]; then
  log "teacher bundle"
  "$T" export --weights "$SHARED/teacher/lite_medsam.pth" --out "$W/litemedsam-export"
  "$T" bundle --graphs "$W/litemedsam-export" --out "$W/litemedsam.esb.tmp"
  mv "$W/litemedsam.esb.tmp" "$W/litemedsam.esb"
fi

ds_args=()
for d in "${DATASETS[@]}"; do ds_args+=(--dataset "$SHARED/data/$d"); done
for split in train val; do
  log "teacher cache: $split (resumes)"
  "$T" distill cache --teacher "$W/litemedsam.esb" "${ds_args[@]}" --split "$split" \
    --out "$W/cache-$split"
done

threads=${THREADS:-}
if [ -z "$threads" ] && [ "${#STUDENTS[@]}" -gt 1 ]; then threads=1; fi

train_student() {
  local s=$1 run="$W/$s"
  log "$s: stage 1"
  "$T" distill train --cache "$W/cache-train" --student "$s" --stage 1 --out "$run" \
    --epochs "$EPOCHS1"
  log "$s: stage 2"
  "$T" distill train --cache "$W/cache-train" --val-cache "$W/cache-val" --student "$s" \
    --stage 2 --out "$run" --epochs "$EPOCHS2"
  log "$s: export, bundle"
  "$T" export --config "$s" --weights "$run/stage2/weights.safetensors" --name "$s" \
    --version "$VERSION" --out "$run/export"
  "$T" bundle --graphs "$run/export" --out "$run/$s.bundle"
  mkdir -p "$run/eval"
  for d in "${DATASETS[@]}"; do
    log "$s: eval on $d test"
    "$T" eval --bundle "$run/$s.bundle" --name "$s" --threads 1 --dataset "$SHARED/data/$d" \
      --split test --out "$run/eval/${d}__$s.json"
  done
}

pids=()
for s in "${STUDENTS[@]}"; do
  if [ -n "$threads" ]; then
    RAYON_NUM_THREADS=$threads train_student "$s" > "$W/$s.log" 2>&1 &
  else
    train_student "$s" > "$W/$s.log" 2>&1 &
  fi
  pids+=($!)
  log "$s: running (log $W/$s.log)"
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
log "done (status $status); bundles and reports under $W/<student>/"
exit $status
