#!/usr/bin/env bash
# The engine benchmark at real size on a GPU: LLaDA-8B's shape with random weights in bf16, no
# network needed. Writes everything (results JSON, table, plots, workloads, environment) into OUT.
#
#   benchmarks/gpu_runbook.sh OUT [--dry-run] [more `python -m benchmarks.engine` options]
#
#   --dry-run   the same steps at tiny size on the CPU (what CI-like machines can check)
#   e.g.        benchmarks/gpu_runbook.sh /tmp/gpu --scenarios burst-1,burst-16 --max-seconds 240
#
# Python: $PYTHON, else python3. The GPU machines have torch and triton but maybe not the project's
# small dependencies (safetensors, tokenizers, jinja2; matplotlib for plots): when one is missing and
# a wheelhouse exists ($WHEELHOUSE, default benchmarks/wheelhouse/, made on a networked machine with
# `benchmarks/gpu_wheelhouse.sh`), they are installed offline into OUT/venv, which sees the system's
# torch. Without matplotlib the plots are skipped, nothing else.
set -euo pipefail

if [[ $# -lt 1 || $1 == -* ]]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
shift
PROFILE=gpu
EXTRA=()
for arg in "$@"; do
    if [[ $arg == --dry-run ]]; then PROFILE=tiny; EXTRA+=(--device cpu); else EXTRA+=("$arg"); fi
done
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-$REPO/benchmarks/wheelhouse}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[$(date +%H:%M:%S)] runbook: $*"; }

missing() {  # the required modules this Python cannot import
    "$1" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "numpy", "safetensors", "tokenizers", "jinja2")
               if importlib.util.find_spec(m) is None))
EOF
}

need=$(missing "$PY")
if [[ -n $need ]]; then
    if [[ $need == *torch* ]]; then log "no torch in $PY: this machine cannot run the benchmark"; exit 1; fi
    if [[ ! -d $WHEELHOUSE ]]; then
        log "missing Python modules: $need; no wheelhouse at $WHEELHOUSE (make one with benchmarks/gpu_wheelhouse.sh)"
        exit 1
    fi
    log "installing $need (+ matplotlib if there) from $WHEELHOUSE into $OUT/venv, offline"
    "$PY" -m venv --system-site-packages "$OUT/venv"
    PY="$OUT/venv/bin/python"
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" $need
    "$PY" -m pip install --quiet --no-index --find-links "$WHEELHOUSE" matplotlib 2>/dev/null \
        || log "matplotlib not in the wheelhouse: plots will be skipped"
fi

log "environment into $OUT/environment.txt"
{
    echo "date: $(date -Is)"
    echo "git: $(git -C "$REPO" rev-parse HEAD 2>/dev/null || echo unknown)"
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__,
"| cuda", torch.version.cuda, "| gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")'
    "$PY" -c 'import triton; print("triton", triton.__version__)' 2>/dev/null || echo "triton: not installed"
    command -v nvidia-smi >/dev/null && nvidia-smi || echo "nvidia-smi: not found"
} > "$OUT/environment.txt" 2>&1
if [[ $PROFILE == gpu ]] && ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    log "no CUDA device visible to torch; use --dry-run for the CPU check"
    exit 1
fi

log "python -m benchmarks.engine --profile $PROFILE --out $OUT ${EXTRA[*]:-}"
cd "$REPO"
"$PY" -m benchmarks.engine --profile "$PROFILE" --out "$OUT" --tag "${TAG:-}" "${EXTRA[@]}"
# The device model fitted to the run's iterations (benchmarks/README.md): seconds, on the CPU.
RESULTS=$(ls -t "$OUT"/*-"$PROFILE".json 2>/dev/null | head -n 1)
if [[ -n $RESULTS ]]; then
    "$PY" -m benchmarks.fit_device "$RESULTS" --out "$OUT/device.json" > "$OUT/device.md" 2>&1 \
        && cat "$OUT/device.md" || log "fit_device failed (see $OUT/device.md); the results stand"
fi
log "done: $(ls "$OUT" | tr '\n' ' ')"
