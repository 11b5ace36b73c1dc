"""A Perf Analyzer smoke run against the served model: gRPC streaming, concurrency 4, no errors."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

SAMPLING = {"max_tokens": 16, "block_length": 16, "steps": 16}
README = Path(__file__).resolve().parents[2] / "README.md"
# Shorter measurement than Perf Analyzer's default (three stable 5 s windows), same load.
FAST = ["--measurement-interval", "2000", "--stability-percentage", "1000", "--max-trials", "3"]


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


def test_readme_perf_analyzer_command_runs_as_written(server, tmp_path):
    """The README's two lines, as a user runs them after `make serve` (no LD_LIBRARY_PATH of their own),
    pointed at the test server and with a shorter measurement; the input file goes to tmp_path."""
    text = README.read_text()
    echo = re.search(r"^echo '(.+)' > (\S+)$", text, re.M)
    line = re.search(r"^\.venv/bin/perf_analyzer .+$", text, re.M)
    assert echo and line, "README: the Perf Analyzer example is missing"
    assert echo.group(2).startswith("/tmp/"), "the example must not write into the repository"
    json.loads(echo.group(1))  # what the shell's echo writes: single quotes keep it as it is
    (tmp_path / "in.json").write_text(echo.group(1))
    argv = [str(tmp_path / "in.json") if a == echo.group(2) else a for a in shlex.split(line.group(0))]
    assert argv[0] == ".venv/bin/perf_analyzer" and str(tmp_path / "in.json") in argv
    argv[0] = str(Path(sys.executable).parent / "perf_analyzer")
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    run = subprocess.run(argv + ["-u", server.grpc_url] + FAST, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"Concurrency: 4, throughput: [0-9.]+ infer/sec", run.stdout), run.stdout
