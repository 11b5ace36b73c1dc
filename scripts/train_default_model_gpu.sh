#!/usr/bin/env bash
# How the bundled default model was trained on a GPU (see the model card for the CPU stage after it).
#   scripts/train_default_model_gpu.sh 1 DEST [MINUTES]            stage 1: four configurations from scratch
#   scripts/train_default_model_gpu.sh 2 DEST [MINUTES] STAGE1_DIR  stage 2: continue stage-1 runs a and d
#   scripts/train_default_model_gpu.sh sdar DEST [MINUTES] [INIT]   the block-diffusion model (issue 26):
#       SDAR's objective, blocks of 8, converted from the bundled LLaDA model (or INIT, e.g. a CPU run's
#       checkpoint), stage 2's key-value curriculum; scored with SDAR's official decoding
# Each configuration trains in its own process on the one GPU, is scored on the held-out set and is
# packed as DEST/<name>.tar (checkpoint directory + eval.json), with DEST/logs.tar beside them.
# Run from the repository root with a python3 that has torch (CUDA), tokenizers and safetensors.
set -euo pipefail
STAGE=${1:?usage: scripts/train_default_model_gpu.sh STAGE DEST [MINUTES] [STAGE1_DIR]}
DEST=${2:?usage: scripts/train_default_model_gpu.sh STAGE DEST [MINUTES] [STAGE1_DIR]}
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
sweep() {
    PYTHONUNBUFFERED=1 "$PY" -m backend.training.sweep --device "${DEVICE:-cuda}" --pack "$DEST" \
        --per-task "${PER_TASK:-50}" "$@"
}
case "$STAGE" in
1)  # Curriculum over the first quarter of the steps for every task.
    sweep --out "${WORK:-/tmp/default-model-stage1}" --minutes "${3:-6}" --calibrate-seconds "${CALIBRATE:-40}" \
        --common "${COMMON:-"--batch add=64,sort=64,reverse=64,copy=64,kv=128 --threads 1 --data-workers 2 \
--log-every 50 --warmup-steps 200"}" \
        --run "a=--lr 2e-3 --seed 0" \
        --run "b=--lr 3e-3 --seed 1" \
        --run "c=--lr 2e-3 --seed 2 --batch add=48,sort=48,reverse=48,copy=48,kv=256" \
        --run "d=--lr 2e-3 --seed 3 --num-layers 8" ;;
2)  # Key-value contexts start at one `key: value` line and reach 300 characters over 70% of the run;
    # more addition and key-value examples per step.
    STAGE1=${4:?stage 2 needs STAGE1_DIR (holding the stage-1 run directories a/ and d/)}
    sweep --out "${WORK:-/tmp/default-model-stage2}" --minutes "${3:-4}" --calibrate-seconds "${CALIBRATE:-20}" \
        --margin 0.9 \
        --common "${COMMON:-"--batch add=128,sort=64,reverse=32,copy=32,kv=384 --threads 1 --data-workers 3 \
--log-every 50 --warmup-steps 100 --ramp 0 --kv-ramp 0.7 --kv-min-chars 8 --kv-start 24"}" \
        --run "a2=--init-from $STAGE1/a --lr 2e-3 --seed 10" \
        --run "d2=--init-from $STAGE1/d --num-layers 8 --lr 1.5e-3 --seed 13" ;;
sdar)  # Causal key-value lookup is what a converted model has to relearn (a line no longer sees the
    # question after it): contexts from one line to 300 characters over 70% of the run, kv-heavy steps.
    INIT=${4:-model_repository/dllm/1/default-model}
    sweep --out "${WORK:-/tmp/block-model}" --minutes "${3:-5}" --calibrate-seconds "${CALIBRATE:-20}" \
        --margin 0.9 \
        --common "${COMMON:-"--arch sdar --block-size 8 --num-layers 8 --max-sequence-length 640 \
--init-from $INIT --gen-length 24 --batch add=128,sort=64,reverse=32,copy=32,kv=384 --threads 1 \
--data-workers 3 --log-every 50 --warmup-steps 50 --ramp 0 --kv-ramp 0.7 --kv-min-chars 8 --kv-start 24"}" \
        --run "s1=--lr 1e-3 --seed 20" \
        --run "s2=--lr 2e-3 --seed 21" ;;
*)  echo "STAGE: 1, 2 or sdar, got $STAGE" >&2; exit 2 ;;
esac
ls -la "$DEST"
