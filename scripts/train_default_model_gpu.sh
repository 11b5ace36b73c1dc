#!/usr/bin/env bash
# How the bundled default model was trained: four configurations side by side on one GPU, each
# scored on the held-out set, each packed as DEST/<name>.tar (checkpoint directory + eval.json).
#   scripts/train_default_model_gpu.sh DEST [MINUTES]
# Run from the repository root with a python3 that has torch (CUDA), tokenizers and safetensors.
set -uo pipefail
DEST=${1:?usage: scripts/train_default_model_gpu.sh DEST [MINUTES]}
MINUTES=${2:-6}
WORK=${WORK:-/tmp/default-model-sweep}
PY=${PY:-python3}
mkdir -p "$DEST" "$WORK"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
COMMON=${COMMON:-"--batch add=64,sort=64,reverse=64,copy=64,kv=128 --threads 1 --data-workers 2 --log-every 50 --warmup-steps 200"}
DEVICE=${DEVICE:-cuda}
PYTHONUNBUFFERED=1 "$PY" -m backend.training.sweep --out "$WORK" --minutes "$MINUTES" --calibrate-seconds ${CALIBRATE:-40} \
    --device "$DEVICE" --common "$COMMON" \
    --run "a=--lr 2e-3 --seed 0" \
    --run "b=--lr 3e-3 --seed 1" \
    --run "c=--lr 2e-3 --seed 2 --batch add=48,sort=48,reverse=48,copy=48,kv=256" \
    --run "d=--lr 2e-3 --seed 3 --num-layers 8"
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
