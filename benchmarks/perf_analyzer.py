"""Drive Perf Analyzer (the `perf_analyzer` binary of tritonclient[all]) against the dllm model:
input data from a workload, one invocation per load level, gRPC streaming, profile export on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.workloads import WorkItem, Workload


def binary() -> str:
    found = shutil.which("perf_analyzer") or str(Path(sys.executable).parent / "perf_analyzer")
    if not Path(found).is_file():
        raise FileNotFoundError("perf_analyzer: not found; `pip install tritonclient[all]==2.50.0` provides it")
    return found


def environment() -> dict:
    """perf_analyzer needs libb64 and libcudart: the server launcher lays both out from its wheel."""
    try:
        from backend.server.tritonserver import layout, server_env

        return server_env(layout())
    except Exception:  # no nvidia-pytriton: hope the libraries are on the system
        return dict(os.environ)


def sampling_json(item: WorkItem, base: dict) -> str:
    return json.dumps({**base, "max_tokens": item.max_tokens}, sort_keys=True)


def input_data(workload: Workload, base_sampling: dict) -> dict:
    """One data step per request, in workload order. Perf Analyzer hands steps out round-robin over
    its request contexts, so a run of len(items) requests sends every item once."""
    if any(i.text is None for i in workload.items):
        raise ValueError("workload: Perf Analyzer sends text; this workload has token-id prompts (use task prompts)")
    return {"data": [{
        "text_input": [i.text],
        "stream": [True],
        "exclude_input_in_output": [True],
        "return_num_output_tokens": [True],
        "return_finish_reason": [True],
        "sampling_parameters": [sampling_json(i, base_sampling)],
    } for i in workload.items]}


@dataclass
class Level:
    mode: str  # "concurrency" | "rate" | "replay"
    value: float | None  # concurrency or requests/s; None for replay
    workload: Workload
    request_count: int

    @property
    def name(self) -> str:
        if self.mode == "replay":
            return f"replay-{self.workload.name}"
        return f"{self.mode}-{self.value:g}-{self.workload.name}"


def command(level: Level, url: str, model: str, data_file: Path, export: Path, csv_file: Path,
            intervals_file: Path | None, max_threads: int) -> list[str]:
    cmd = [binary(), "-m", model, "-u", url, "-i", "grpc", "--streaming", "--input-data", str(data_file),
           "--profile-export-file", str(export), "-f", str(csv_file), "--request-count", str(level.request_count)]
    if level.mode == "concurrency":
        cmd += ["--concurrency-range", str(int(level.value))]
    elif level.mode == "rate":
        cmd += ["--request-rate-range", f"{level.value:g}", "--request-distribution", "poisson",
                "--max-threads", str(max_threads)]
    elif level.mode == "replay":
        cmd += ["--request-intervals", str(intervals_file), "--max-threads", str(max_threads)]
    else:
        raise ValueError(f"mode: unknown load mode {level.mode!r}")
    return cmd


def run(level: Level, url: str, model: str, base_sampling: dict, workdir: Path, timeout: float,
        max_threads: int = 16) -> dict:
    """Run one level; returns paths and Perf Analyzer's exit status and output tail."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_file = workdir / f"{level.workload.name}.input.json"
    data_file.write_text(json.dumps(input_data(level.workload, base_sampling)))
    intervals = None
    if level.mode == "replay":
        intervals = workdir / f"{level.workload.name}.intervals.txt"
        intervals.write_text("\n".join(str(us) for us in level.workload.intervals_us()) + "\n")
    export, csv_file = workdir / f"{level.name}.export.json", workdir / f"{level.name}.csv"
    for stale in (export, csv_file):  # Perf Analyzer refuses to overwrite an export of an earlier run
        stale.unlink(missing_ok=True)
    cmd = command(level, url, model, data_file, export, csv_file, intervals, max_threads)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=environment(), capture_output=True, text=True, timeout=timeout)
        rc, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, output = 124, f"perf_analyzer: timed out after {timeout:.0f} s\n{e.stdout or ''}"
    (workdir / f"{level.name}.log").write_text(" ".join(cmd) + "\n\n" + output)
    errors = [line for line in output.splitlines() if line.startswith("Error")]  # else a page of usage text
    return {"rc": rc, "export": export, "csv": csv_file, "command": cmd, "tail": "\n".join(errors) or output[-2000:],
            "seconds": round(time.perf_counter() - start, 1)}
