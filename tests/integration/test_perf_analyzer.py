"""A Perf Analyzer smoke run against the served model: gRPC streaming, concurrency 4, no errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SAMPLING = {"max_tokens": 16, "block_length": 16, "steps": 16}


def test_perf_analyzer_streaming_smoke(server, tmp_path):
    data = {"data": [{"text_input": [p], "stream": [True], "sampling_parameters": [json.dumps(SAMPLING)]}
                     for p in ("12+34=", "copy abc =", "7+8=")]}
    (tmp_path / "input.json").write_text(json.dumps(data))
    binary = Path(sys.executable).parent / "perf_analyzer"
    cmd = [str(binary), "-m", "dllm", "-i", "grpc", "--streaming", "-u", server.grpc_url,
           "--input-data", str(tmp_path / "input.json"), "--concurrency-range", "4",
           "--measurement-interval", "2000", "--stability-percentage", "1000", "--max-trials", "3",
           "--profile-export-file", str(tmp_path / "profile.json")]
    # server.env puts the libraries perf_analyzer needs (libb64, libcudart) on LD_LIBRARY_PATH.
    run = subprocess.run(cmd, env=server.env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "error" not in (run.stdout + run.stderr).lower(), run.stdout + run.stderr
    profile = json.loads((tmp_path / "profile.json").read_text())
    requests = profile["experiments"][0]["requests"]
    assert len(requests) >= 8
    assert all(r["response_timestamps"] for r in requests)
