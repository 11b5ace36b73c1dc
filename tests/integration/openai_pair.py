"""`make serve-openai`'s processes for the tests: `python -m openai_server.launch` (tritonserver and the
OpenAI-compatible server) on free ports, stopped as Ctrl-C stops it; and a lone OpenAI server in front of
any gRPC address (a dead one, or a model Triton has not loaded) for the 503 cases."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.integration.server import free_ports

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 180


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


@dataclass
class Pair:
    proc: subprocess.Popen
    port: int
    grpc_port: int
    metrics_port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGINT to the launcher (what Ctrl-C sends): both servers must stop, the launcher exits 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


def wait_status(url: str, want: int, timeout: float, proc: subprocess.Popen) -> None:
    end = time.monotonic() + timeout
    while _status(url) != want:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with code {proc.returncode} before {url} answered {want}")
        if time.monotonic() > end:
            raise RuntimeError(f"{url} did not answer {want} within {timeout:.0f} s")
        time.sleep(0.3)


def start_pair(log_path: Path) -> Pair:
    port, http, grpc, metrics = free_ports(4)
    cmd = [sys.executable, "-m", "openai_server.launch", "--port", str(port), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--", "--exit-timeout-secs=10"]
    log = open(log_path, "w")  # noqa: SIM115  (the processes write to it for their whole life)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pair = Pair(proc, port, grpc, metrics, log_path)
    try:
        wait_status(f"http://127.0.0.1:{port}/health", 200, START_TIMEOUT_S, proc)
    except RuntimeError as e:
        pair.stop(30)
        tail = "\n".join(pair.log().splitlines()[-40:])
        raise RuntimeError(f"make serve-openai's processes did not come up: {e}\n--- log tail ---\n{tail}") from None
    return pair


def start_lone_server(triton_url: str, model: str, log_path: Path) -> tuple[subprocess.Popen, str]:
    """An OpenAI server alone (serving the name "dllm"), in front of `triton_url`; returns (process, base URL)."""
    (port,) = free_ports(1)
    cmd = [sys.executable, "-m", "openai_server", "--port", str(port), "--triton-url", triton_url, "--model", model,
           "--served-model-name", "dllm"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    wait_status(f"http://127.0.0.1:{port}/v1/models", 200, 60, proc)
    return proc, f"http://127.0.0.1:{port}/v1"
