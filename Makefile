# Two entry points for users: `make setup` (or the targets that need it) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of torch that lies on these machines' disk; GPU machines bring their own torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup test lint clean serve-deps serve

$(VENV)/.setup-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.setup-done

# pytest exits 5 when it collected no test: that must fail, not pass silently.
# serve-deps: the integration tests start a real tritonserver; aiperf-deps: one of them runs AIPerf;
# openai-deps: the OpenAI-compatible server's tests (FastAPI, uvicorn, the official openai client).
test: setup serve-deps aiperf-deps openai-deps
	$(PY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

# ruff, then the import contracts of .importlinter (the layering: kernels < models < engine < ...).
lint: setup
	$(PY) -m ruff check backend kernels client openai_server tests benchmarks model_repository scripts
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

# --- serving -------------------------------------------------------------------------------------
# tritonserver 2.51 (release 24.10) ships inside the nvidia-pytriton wheel; Perf Analyzer and the
# clients inside tritonclient[all] (2.50: newer wheels need a newer glibc than Debian 12's).
SERVE_SPEC ?= nvidia-pytriton==0.7.0 tritonclient[all]==2.50.0
HTTP_PORT ?= 8000
GRPC_PORT ?= 8001
METRICS_PORT ?= 8002
MODEL_REPOSITORY ?= model_repository

# layout also builds the admin-key shim (backend/server/admin_key_shim.c) with the C compiler: without
# it the launcher refuses to start a server with restricted APIs (the key would be on its command line).
$(VENV)/.serve-done: $(VENV)/.setup-done
	@command -v $${CC:-gcc} >/dev/null || command -v cc >/dev/null || \
		{ echo "make serve-deps: needs a C compiler for the admin-key shim: apt-get install gcc" >&2; exit 1; }
	$(PY) -m pip install --quiet $(SERVE_SPEC)
	$(PY) -m backend.server.tritonserver layout >/dev/null
	touch $@

serve-deps: $(VENV)/.serve-done

# AIPerf (`python -m benchmarks.aiperf`) in a virtual environment of its own, inside .venv: it brings ~1 GB
# of dependencies (pandas, pyarrow, scipy, transformers, dash, ...) that the project's .venv does not need.
AIPERF_SPEC ?= aiperf==0.13.0
$(VENV)/aiperf/.done:
	$(PYTHON) -m venv $(VENV)/aiperf
	$(VENV)/aiperf/bin/python -m pip install --quiet "$(AIPERF_SPEC)"
	touch $@

.PHONY: aiperf-deps
aiperf-deps: $(VENV)/aiperf/.done

# The OpenAI-compatible server (openai_server/): pyproject's extra "openai".
$(VENV)/.openai-done: $(VENV)/.setup-done
	$(PY) -m pip install --quiet -e ".[openai]"
	touch $@

.PHONY: openai-deps serve-openai
openai-deps: $(VENV)/.openai-done

# Foreground; Ctrl-C stops it. Ports and repository: make serve HTTP_PORT=9000 GRPC_PORT=9001 ...
# Network: 127.0.0.1 only unless HOST=0.0.0.0 (or an address); the model-repository, shared-memory,
# trace and logging APIs are closed unless the environment gives a key (ADMIN_KEY=<secret> make serve,
# or ADMIN_KEY_FILE=<file> make serve; clients send the header dllm-admin-key: <secret>) or
# OPEN_ADMIN_APIS=1 (backend/server/network.py). The key reaches tritonserver through the
# environment and the shim, never a command line: `make serve ADMIN_KEY=...` would put it on make's
# own, readable by every local user in /proc/<pid>/cmdline while the server runs, so it is refused.
ifeq ($(origin ADMIN_KEY),command line)
$(error ADMIN_KEY on make's command line is readable by every local user: run ADMIN_KEY=<key> make serve, or make serve ADMIN_KEY_FILE=<file>)
endif
HOST ?= 127.0.0.1
OPEN_ADMIN_APIS ?=
serve: serve-deps
	HTTP_PORT=$(HTTP_PORT) GRPC_PORT=$(GRPC_PORT) METRICS_PORT=$(METRICS_PORT) HOST=$(HOST) \
	OPEN_ADMIN_APIS=$(OPEN_ADMIN_APIS) MODEL_REPOSITORY=$(MODEL_REPOSITORY) PY=$(PY) scripts/serve.sh

# tritonserver and the OpenAI-compatible server (/v1/chat/completions, /v1/completions, /v1/models on
# OPENAI_PORT) in the foreground; Ctrl-C stops both. The same HOST, ports and admin-key rules as `make serve`.
OPENAI_PORT ?= 9000
serve-openai: serve-deps openai-deps
	$(PY) -m openai_server.launch --host $(HOST) --port $(OPENAI_PORT) \
		--http-port $(HTTP_PORT) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) \
		--model-repository $(MODEL_REPOSITORY) $(if $(OPEN_ADMIN_APIS),--open-admin-apis,)

# --- benchmarks ----------------------------------------------------------------------------------
# In-process engine benchmarks on the two bundled models, on the CPU (a few minutes each): the LLaDA-
# architecture one (profile cpu), then the block-diffusion one (profile block-cpu). Each writes
# benchmarks/results/<date>-<machine>[-profile].{json,md} and plots, and refreshes its README table.
# Server load test with Perf Analyzer against a running `make serve` (same GRPC_PORT), compared with
# the newest engine results. More: benchmarks/README.md.
# One torch thread by default: on the 2-core machines shared with other work, OpenMP's spinning
# threads made 2 threads 7x slower than 1 under contention (2 threads win only on an idle machine).
BENCH_THREADS ?= 1
BENCH_ARGS ?=
BLOCK_BENCH_ARGS ?=
LOADTEST_ARGS ?= --concurrency 1,2,4,8 --rates 2,8,32,128 --replay burst,mixed

.PHONY: bench loadtest
bench: setup
	$(PY) -c "import matplotlib" 2>/dev/null || $(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m benchmarks.engine --profile cpu --out benchmarks/results --readme README.md \
		--threads $(BENCH_THREADS) $(BENCH_ARGS)
	$(PY) -m benchmarks.engine --profile block-cpu --out benchmarks/results --readme README.md \
		--readme-block bench-block --threads $(BENCH_THREADS) $(BLOCK_BENCH_ARGS)

loadtest: serve-deps
	$(PY) -m benchmarks.loadtest --url localhost:$(GRPC_PORT) --compare latest $(LOADTEST_ARGS)
