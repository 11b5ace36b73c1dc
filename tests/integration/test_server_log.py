"""The integration server's log: start-up on a machine without a GPU shows no errors of GPU-only features."""

from __future__ import annotations

GPU_ERRORS = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML", "DCGM unable to start",
              "Unable to allocate pinned system memory")


def test_startup_logs_no_gpu_errors(server):
    log = server.log()
    assert "successfully loaded 'dllm'" in log  # the real start-up log, model loaded
    found = [line for line in log.splitlines() if any(e in line for e in GPU_ERRORS)]
    assert not found, "\n".join(found)
