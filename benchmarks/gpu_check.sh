#!/usr/bin/env bash
# The one command to run on a GPU machine (about 5-6 minutes on an H200 before issue 25's steps; with
# them an estimated 8-9: not yet run on a GPU). Writes logs and JSON into OUT and prints a short table last.
#
#   benchmarks/gpu_check.sh OUT [--dry-run]
#
#   1. kernel tests on CUDA (not the interpreter): the paged attention kernel (every variant, the
#      GQA-grouped ones too) and the fused greedy decode head against their references;
#   2. bursts of 1, 16 and 64 requests at LLaDA-8B's shape (random bf16 weights, prompt 256 + 256
#      generated, block 32) at 1, 2 and 4 tokens per step (steps = generation, /2, /4): tok/s and
#      Refresh / Reuse step milliseconds, with CUDA graphs;
#   3. the K/V pool capped to what a 24 GiB card (RTX 4090) leaves after the weights, 16 requests of
#      2,048-token prompts, dense vs sparse_retention 0.5 and 0.25 (benchmarks/capped_pool.py);
#   4. engine exactness on CUDA in float32 with refresh every step (must equal the reference decoder),
#      and token agreement (CUDA graphs vs eager vs the CPU engine; bf16 vs the reference);
#   5. N=1 eager, and an older engine ($BASELINE, if there) for comparison;
#   6. the kernels alone: the fused greedy decode head against the budgeted head at LLaDA-8B's
#      vocabulary (benchmarks/decode_head_timing.py), and the paged attention kernel's bandwidth at
#      LLaDA-8B's and Dream-7B's shapes, launch variants side by side (benchmarks/attention_bandwidth.py;
#      ATTENTION=0 skips it; 2-3 minutes).
#   --dry-run   the same steps at tiny size on the CPU (part of the test suite)
#
# Python: $PYTHON, else python3 (the GPU machines' torch and triton; the project's own small
# dependencies are in their image: numpy, safetensors, tokenizers, jinja2, pytest). BURSTS=1,16
# shortens step 2, TOKENS_PER_STEP=1 drops its multi-token bursts, CARD_GIB=48 emulates an L40S in
# step 3, STEPS=1,2,3 runs only those steps (a check split over two calls).
set -uo pipefail

if [[ $# -lt 1 || $1 == -* ]]; then
    sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
DRY=0
[[ ${2:-} == --dry-run ]] && DRY=1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
BASELINE=${BASELINE:-$REPO/.baseline}  # an older backend/ + step_timing.py to time on the same card
cd "$REPO"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log() { echo "[$(date +%H:%M:%S)] gpu_check: $*"; }
want() { [[ -z ${STEPS:-} || ,$STEPS, == *,$1,* ]]; }  # whether step $1 runs
TPS=${TOKENS_PER_STEP:-1,2,4}
status=0

{
    echo "date: $(date -Is)"; echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda",
torch.version.cuda, "| gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
    "$PY" -c 'import triton; print("triton", triton.__version__)' 2>&1
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

if [[ $DRY == 1 ]]; then
    DEVICE=cpu; MODELS=tiny-llada; REQUESTS=2; BURST_MODEL=tiny-llada; BURSTS=${BURSTS:-1,4}
    BURST_ARGS=(--device cpu --prompt 16 --gen 32 --block 8); CAPPED_ARGS=(--dry-run); export TRITON_INTERPRET=1
else
    if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        log "no CUDA device visible to torch; use --dry-run for the CPU check"; exit 1
    fi
    DEVICE=cuda; MODELS=tiny-llada,tiny-dream,model_repository/dllm/1/default-model; REQUESTS=8
    BURST_MODEL=llada-8b; BURSTS=${BURSTS:-1,16,64}; BURST_ARGS=(); CAPPED_ARGS=(--card-gib "${CARD_GIB:-24}")
    export DLLM_KERNELS_ON_GPU=1
fi

kernels=0
if want 1; then
    log "1/6 kernel tests ($DEVICE)"
    "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_paged_attention.py tests/unit/test_fused_layer_kernels.py \
        tests/unit/test_fused_decode_head.py tests/unit/test_cuda_engine.py 2>&1 | tee "$OUT/kernel_tests.log" | tail -n 5
    kernels=${PIPESTATUS[0]}
    [[ $kernels == 0 ]] || status=1
fi

if want 2; then
    log "2/6 bursts $BURSTS at $TPS tokens per step ($BURST_MODEL)"
    "$PY" -m benchmarks.step_timing --model "$BURST_MODEL" --bursts "$BURSTS" --tokens-per-step "$TPS" \
        "${BURST_ARGS[@]}" --out "$OUT/bursts.json" > "$OUT/bursts.log" 2>&1 || status=1
    tail -n 5 "$OUT/bursts.log"
fi

if want 3; then
    log "3/6 capped K/V pool, dense vs sparse_retention 0.5 / 0.25 (${CAPPED_ARGS[*]})"
    "$PY" -m benchmarks.capped_pool "${CAPPED_ARGS[@]}" --out "$OUT/capped_pool.json" > "$OUT/capped_pool.log" 2>&1 \
        || status=1
    tail -n 5 "$OUT/capped_pool.log"
fi

agreement=0
if want 4; then
    log "4/6 engine exactness and agreement ($DEVICE)"
    "$PY" -m benchmarks.device_agreement --device "$DEVICE" --models "$MODELS" --requests "$REQUESTS" \
        --out "$OUT/agreement.json" 2>&1 | tee "$OUT/agreement.log" | grep -v '^\s*$' | tail -n 4
    agreement=${PIPESTATUS[0]}
    [[ $agreement == 0 ]] || status=1
fi

if want 5; then
    log "5/6 N=1 without CUDA graphs; the engine before this work ($BASELINE) on the same card, if present"
    "$PY" -m benchmarks.step_timing --model "$BURST_MODEL" --bursts 1 --enforce-eager "${BURST_ARGS[@]}" \
        --out "$OUT/bursts_eager.json" > "$OUT/bursts_eager.log" 2>&1 || status=1
    if [[ -f $BASELINE/step_timing.py ]]; then
        "$PY" "$BASELINE/step_timing.py" --model "$BURST_MODEL" --bursts "$BURSTS" "${BURST_ARGS[@]}" \
            --label "baseline@$(cat "$BASELINE/COMMIT" 2>/dev/null)" --out "$OUT/bursts_baseline.json" \
            > "$OUT/bursts_baseline.log" 2>&1 || status=1
    fi
fi

if want 6; then
    log "6/6 the decode head, fused vs budgeted, at LLaDA-8B's vocabulary"
    "$PY" -m benchmarks.decode_head_timing $([[ $DRY == 1 ]] && echo --dry-run) --out "$OUT/decode_head.json" \
        > "$OUT/decode_head.log" 2>&1 || status=1
    tail -n 4 "$OUT/decode_head.log"
fi

if want 6 && [[ ${ATTENTION:-1} != 0 ]]; then
    log "6/6 paged attention bandwidth at the models' shapes, launch variants (ATTENTION=0 skips)"
    "$PY" -m benchmarks.attention_bandwidth $([[ $DRY == 1 ]] && echo --dry-run) --out "$OUT/attention.json" \
        > "$OUT/attention.log" 2>&1 || status=1
    tail -n 3 "$OUT/attention.log"
fi

echo
verdict() { want "$1" || { echo "not run"; return; }; [[ $2 == 0 ]] && echo pass || echo FAIL; }
log "summary (kernel tests: $(verdict 1 "$kernels"); fp32 exactness: $(verdict 4 "$agreement"))"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for row in json.loads((out / "agreement.json").read_text()) if (out / "agreement.json").exists() else []:
    print("  " + ", ".join(f"{k}={v}" for k, v in row.items() if k != "device"))
att = out / "attention.json"
if att.exists():
    rep = json.loads(att.read_text())
    print(f"  paged attention ({rep['device']}, copy {rep['copy_gb_s']} GB/s): default -> best variant, GB/s")
    cases = {}
    for r in rep["rows"]:
        cases.setdefault((r["model"], r["requests"], r["slots"]), []).append(r)
    for (model, b, slots), rows in cases.items():
        best = max(rows, key=lambda r: r["gb_s"] if r["ok"] else -1)
        print(f"  {model} B={b} L={slots}: {rows[0]['gb_s']} -> {best['gb_s']} ({best['variant']}, "
              f"{best['of_copy_pct']}% of copy){'' if all(r['ok'] for r in rows) else '  SOME VARIANT WRONG'}")
head = out / "decode_head.json"
if head.exists():
    from benchmarks.decode_head_timing import table as head_table
    print(head_table(json.loads(head.read_text())))
cap = out / "capped_pool.json"
if cap.exists():
    from benchmarks.capped_pool import table
    print(table(json.loads(cap.read_text())))
for name in ("bursts.json", "bursts_eager.json", "bursts_baseline.json"):
    p = out / name
    if not p.exists():
        if name != "bursts_baseline.json":  # the baseline is optional
            print(f"  {name}: missing (see {name[:-5]}.log)")
        continue
    rep = json.loads(p.read_text())
    mode = rep.get("label") or ("eager" if rep["enforce_eager"] or not rep["graphs"] else "graphs")
    print(f"  {rep['device']} {rep['model']} {mode}")
    print(f"  {'tok/step':>8} {'N':>4} {'tok/s':>8} {'reuse ms':>9} {'refresh ms p50/max':>19} {'graphed':>8}")
    for r in rep["bursts"]:
        print(f"  {r.get('tokens_per_step', 1):>8} {r['n']:>4} {r['tok_per_s']:>8} {r['reuse_ms_p50']:>9} "
              f"{str(r['refresh_ms_p50']) + '/' + str(r['refresh_ms_max']):>19} "
              f"{r['graphed_steps']:>4}/{sum(r['steps'].values())}")
EOF
exit $status
