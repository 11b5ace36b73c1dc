"""The integration server's log: start-up on a machine without a GPU shows no errors of GPU-only features."""

from __future__ import annotations

GPU_ERRORS = ("CudaDriverHelper has not been initialized", "Failed to initialize NVML", "DCGM unable to start",
              "Unable to allocate pinned system memory")


def test_startup_logs_no_gpu_errors(server):
    log = server.log()
    assert "successfully loaded 'dllm'" in log  # the real start-up log, model loaded
    found = [line for line in log.splitlines() if any(e in line for e in GPU_ERRORS)]
    assert not found, "\n".join(found)


def test_startup_log_names_the_scheduler_and_cost_model(server):
    """An operator reads what the engine runs with: the policy, and the cost model it schedules by (the
    bundled model on the CPU: fixed defaults, never refitted)."""
    lines = [x for x in server.log().splitlines() if "dllm: model" in x and "K/V pages" in x]
    # The first load is the server's start with the repository's settings (other tests reload it).
    assert lines and "scheduler phase, cost model fixed {'floor_ms'" in lines[0], lines
