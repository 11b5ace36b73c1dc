#!/usr/bin/env bash
# Serve model_repository/ with the tritonserver of the nvidia-pytriton wheel, in the foreground;
# Ctrl-C stops it cleanly (tritonserver unloads the model, which stops the engine).
#
#   scripts/serve.sh [-- more tritonserver arguments]
#   HTTP_PORT=9000 GRPC_PORT=9001 METRICS_PORT=9002 MODEL_REPOSITORY=/path scripts/serve.sh
#   HOST=0.0.0.0 scripts/serve.sh          # listen on every interface (default: 127.0.0.1 only)
#   ADMIN_KEY=<secret> scripts/serve.sh    # open the model-repository, shared-memory, trace and logging
#                                          # APIs to clients sending the header dllm-admin-key: <secret>
#   ADMIN_KEY_FILE=<file> scripts/serve.sh # the same, the key read from a file (keep it mode 0600)
#   The key travels in the environment only: tritonserver gets it through a preloaded shim
#   (backend/server/admin_key_shim.c), so it is on no command line other users can read.
#   OPEN_ADMIN_APIS=1 scripts/serve.sh     # open them to everyone (a trusted network only)
#
# What the server needs from this environment (libraries, the Python-backend stub for this Python,
# the venv first on PATH) is set up by backend/server/tritonserver.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
HTTP_PORT=${HTTP_PORT:-8000}
GRPC_PORT=${GRPC_PORT:-8001}
METRICS_PORT=${METRICS_PORT:-8002}
MODEL_REPOSITORY=${MODEL_REPOSITORY:-model_repository}
HOST=${HOST:-127.0.0.1}
ADMIN_ARGS=()
[ -n "${ADMIN_KEY:-}" ] && export DLLM_ADMIN_KEY="$ADMIN_KEY"
# `read`, a builtin: the key never becomes an argument of a process.
if [ -n "${ADMIN_KEY_FILE:-}" ]; then read -r DLLM_ADMIN_KEY < "$ADMIN_KEY_FILE"; export DLLM_ADMIN_KEY; fi
[ -n "${OPEN_ADMIN_APIS:-}" ] && ADMIN_ARGS+=(--open-admin-apis)
READY_HOST=$HOST; [ "$HOST" = 0.0.0.0 ] && READY_HOST=127.0.0.1
[ "${1:-}" = "--" ] && shift

# Say how to call the server once the model is ready. This watcher runs beside the server and ends
# with it (Ctrl-C reaches the whole process group).
(
  ready() { "$PY" -m backend.server.tritonserver wait-ready --host "$READY_HOST" --http-port "$HTTP_PORT" \
      --model "$1" --timeout 900; }
  if ready dllm && { [ ! -d "$MODEL_REPOSITORY/dllm-sdar" ] || ready dllm-sdar; }; then
    url=""; [ "$GRPC_PORT" = 8001 ] || url=" --url localhost:$GRPC_PORT"
    cat <<MSG

==> dllm (and dllm-sdar, if in the repository) ready on $HOST: HTTP :$HTTP_PORT, gRPC :$GRPC_PORT, metrics :$METRICS_PORT/metrics.
dllm (LLaDA architecture) answers five prompt formats (any other prompt: an empty answer, finish_reason stop):
  $PY -m client generate "1234+4321="$url                    # addition          -> 5555
  $PY -m client generate "sort dcba ="$url                   # sorting           -> abcd
  $PY -m client generate "reverse hello ="$url               # reversal          -> olleh
  $PY -m client generate "copy abcdef ="$url                 # copying           -> abcdef
  $PY -m client generate \$'ab: 123\ncd: 456\nget cd: '$url   # key-value lookup  -> 456
The block-diffusion model (SDAR architecture, blocks of 8) answers the same formats:
  $PY -m client generate --model dllm-sdar "reverse hello ="$url
Over HTTP, and the metrics:
  curl -s -X POST localhost:$HTTP_PORT/v2/models/dllm/generate \\
       -d '{"text_input": "12+34=", "exclude_input_in_output": true, "return_finish_reason": true}'
  curl -s localhost:$METRICS_PORT/metrics | grep ^dllm:
Ctrl-C stops the server.

MSG
  fi
) &

exec "$PY" -m backend.server.tritonserver serve --model-repository "$MODEL_REPOSITORY" --host "$HOST" \
  --http-port "$HTTP_PORT" --grpc-port "$GRPC_PORT" --metrics-port "$METRICS_PORT" ${ADMIN_ARGS[@]+"${ADMIN_ARGS[@]}"} \
  -- "$@"
