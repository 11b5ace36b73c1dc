# dllm-serve on NVIDIA's Triton image (release 24.10 = Triton 2.51; Ubuntu 22.04, Python 3.10, CUDA 12.6).
#   docker build -t dllm-serve .
#   docker run --gpus all --shm-size=1g -p 8000:8000 -p 8001:8001 -p 8002:8002 dllm-serve
# A real checkpoint: mount it and an engine.json that names it (see the README):
#   docker run --gpus all --shm-size=1g -p 8000-8002:8000-8002 \
#     -v /data/LLaDA-8B-Instruct:/checkpoints/llada:ro \
#     -v $PWD/engine.json:/models/dllm/1/engine.json:ro dllm-serve
FROM nvcr.io/nvidia/tritonserver:24.10-py3

WORKDIR /opt/dllm-serve
# PyPI's Linux torch wheels are CUDA 12 builds; the image's driver stack runs them. Installed first
# so that code changes do not rebuild this layer.
RUN pip install --no-cache-dir "torch>=2.4"
COPY pyproject.toml README.md ./
COPY backend backend
COPY kernels kernels
COPY client client
COPY benchmarks benchmarks
# The Python backend's stub runs the image's python3: the project goes into its site-packages.
RUN pip install --no-cache-dir .

# The model repository with the bundled model; model.py finds its checkpoint beside itself
# (dllm/1/default-model) unless engine.json or config.pbtxt parameters name another.
COPY model_repository /models

EXPOSE 8000 8001 8002
CMD ["tritonserver", "--model-repository=/models", "--exit-timeout-secs=30"]
