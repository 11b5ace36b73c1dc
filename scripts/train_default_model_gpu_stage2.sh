#!/usr/bin/env bash
# Stage 2 of the bundled model's training: continue stage-1 checkpoints (train_default_model_gpu.sh)
# with a key-value curriculum that starts at one `key: value` line and grows to the full 300
# characters over 70% of the run, and more addition and key-value examples per step.
#   scripts/train_default_model_gpu_stage2.sh DEST STAGE1_DIR [MINUTES]
# STAGE1_DIR holds the stage-1 run directories a/ and d/.
set -uo pipefail
DEST=${1:?usage: DEST STAGE1_DIR [MINUTES]}
STAGE1=${2:?usage: DEST STAGE1_DIR [MINUTES]}
MINUTES=${3:-4}
WORK=${WORK:-/tmp/default-model-stage2}
PY=${PY:-python3}
mkdir -p "$DEST" "$WORK"
COMMON=${COMMON:-"--batch add=128,sort=64,reverse=32,copy=32,kv=384 --threads 1 --data-workers 3 --log-every 50 \
--warmup-steps 100 --ramp 0 --kv-ramp 0.7 --kv-min-chars 8 --kv-start 24"}
PYTHONUNBUFFERED=1 "$PY" -m backend.training.sweep --out "$WORK" --minutes "$MINUTES" \
    --calibrate-seconds ${CALIBRATE:-20} --margin 0.9 --per-task ${PER_TASK:-50} --device "${DEVICE:-cuda}" --common "$COMMON" \
    --run "a2=--init-from $STAGE1/a --lr 2e-3 --seed 10" \
    --run "d2=--init-from $STAGE1/d --num-layers 8 --lr 1.5e-3 --seed 13"
rc=$?
shopt -s nullglob
for d in "$WORK"/*/; do
    name=$(basename "$d")
    case "$name" in *.cal) continue ;; esac
    tar -C "$WORK" -cf "$DEST/$name.tar" "$name"
done
tar -C "$WORK" -cf "$DEST/logs.tar" --exclude='*.safetensors' --exclude='*.cal' .
ls -la "$DEST"
exit $rc
