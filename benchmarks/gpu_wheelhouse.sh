#!/usr/bin/env bash
# On a machine with network: download the wheels that gpu_runbook.sh may need on a GPU machine that
# has torch and triton but no internet (the project's small dependencies, and matplotlib for plots).
#
#   benchmarks/gpu_wheelhouse.sh [DEST] [PYTHON_VERSION]     default: benchmarks/wheelhouse, 3.12
#
# Then bring DEST along with the checkout (e.g. the device tool's `carry`); the runbook installs from
# it offline. About 40 MB.
set -euo pipefail
DEST=${1:-$(cd "$(dirname "$0")" && pwd)/wheelhouse}
PYVER=${2:-3.12}
python3 -m pip download --quiet --dest "$DEST" --only-binary=:all: --python-version "$PYVER" \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    safetensors tokenizers jinja2 numpy matplotlib
ls "$DEST"
