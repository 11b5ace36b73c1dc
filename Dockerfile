# dllm-serve on NVIDIA's Triton image (release 24.10 = Triton 2.51; Ubuntu 22.04, Python 3.10, CUDA 12.6).
#   docker build -t dllm-serve .
#   docker run --gpus all --shm-size=1g -p 127.0.0.1:8000:8000 -p 127.0.0.1:8001:8001 -p 127.0.0.1:8002:8002 dllm-serve
#   (add -p 127.0.0.1:9000:9000 for the OpenAI-compatible server, started as below EXPOSE)
# What to open: inside the container tritonserver listens on every interface (Docker's port mapping
# needs it), so the -p options decide who can connect. 8000 (HTTP) and 8001 (gRPC) serve inference;
# 8002 serves Prometheus metrics (no secrets, but publish it to your monitoring only). Bind to
# 127.0.0.1 as above unless other machines must call the server (then -p 8000:8000 ..., behind your
# own TLS and authentication: Triton has none). The model-repository (load/unload), shared-memory,
# trace and logging APIs are closed: a random admin key nobody knows restricts them. To use them,
# pass -e DLLM_ADMIN_KEY=<secret> and send the header `dllm-admin-key: <secret>` (gRPC metadata
# `triton-grpc-protocol-dllm-admin-key`); never expose the shared-memory API to untrusted clients.
# The key reaches tritonserver through the environment and a preloaded shim, never its command line
# (backend/server/admin_key_shim.c, built in the first stage: the runtime image has no compiler).
# A real checkpoint: mount it and an engine.json that names it (see the README):
#   docker run --gpus all --shm-size=1g -p 8000-8002:8000-8002 \
#     -v /data/LLaDA-8B-Instruct:/checkpoints/llada:ro \
#     -v $PWD/engine.json:/models/dllm/1/engine.json:ro dllm-serve
FROM nvcr.io/nvidia/tritonserver:24.10-py3 AS shim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
COPY backend/server/admin_key_shim.c /tmp/
RUN gcc -shared -fPIC -O2 -Wall -Wextra -Werror -o /tmp/libdllm_admin_key.so /tmp/admin_key_shim.c -ldl

FROM nvcr.io/nvidia/tritonserver:24.10-py3

WORKDIR /opt/dllm-serve
COPY --from=shim /tmp/libdllm_admin_key.so /opt/dllm-serve/lib/libdllm_admin_key.so
# PyPI's Linux torch wheels are CUDA 12 builds; the image's driver stack runs them. Installed first
# so that code changes do not rebuild this layer.
RUN pip install --no-cache-dir "torch>=2.4"
COPY pyproject.toml README.md ./
COPY backend backend
COPY kernels kernels
COPY client client
COPY openai_server openai_server
COPY benchmarks benchmarks
# The Python backend's stub runs the image's python3: the project goes into its site-packages, with the
# OpenAI-compatible server's dependencies (extra "openai": FastAPI, uvicorn, the gRPC client).
RUN pip install --no-cache-dir ".[openai]"

# The model repository with the bundled model; model.py finds its checkpoint beside itself
# (dllm/1/default-model) unless engine.json or config.pbtxt parameters name another.
COPY model_repository /models

# 9000: the OpenAI-compatible server, when started beside tritonserver (README, "OpenAI-compatible frontend"):
#   docker exec -d <container> python3 -m openai_server --host 0.0.0.0 --triton-url localhost:8001 \
#     --tokenizer /models/dllm/1/default-model
EXPOSE 8000 8001 8002 9000
# DLLM_EXIT_TIMEOUT_SECS: how long a stopping server waits for in-flight requests (deploy/kubernetes/
# sets it within the pod's termination grace). The same restriction as backend/server/network.py applies
# to `make serve`: "@DLLM_ADMIN_KEY" is the placeholder the shim replaces with "=<key>" (without the shim Triton refuses the option and exits).
CMD ["/bin/sh", "-c", "export DLLM_ADMIN_KEY=${DLLM_ADMIN_KEY:-$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n')}; \
apis=model-repository,shared-memory,trace,logging; \
export LD_PRELOAD=/opt/dllm-serve/lib/libdllm_admin_key.so${LD_PRELOAD:+:$LD_PRELOAD}; \
exec tritonserver --model-repository=/models --exit-timeout-secs=${DLLM_EXIT_TIMEOUT_SECS:-30} \
--http-restricted-api=$apis:dllm-admin-key@DLLM_ADMIN_KEY --grpc-restricted-protocol=$apis:dllm-admin-key@DLLM_ADMIN_KEY"]
