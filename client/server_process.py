"""Start a local tritonserver for a load test and stop it afterwards (the same launcher as `make serve`),
for runs that should not depend on a server someone left running."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from backend.server.tritonserver import DEFAULT_MODEL_REPOSITORY, join_log, layout, server_command, server_env, start


def wait_ready(http_url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"tritonserver exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"tritonserver at {http_url} not ready after {timeout:.0f} s")


class LocalServer:
    """`with LocalServer(ports) as s:` a ready server; its log goes to `log_path`."""

    def __init__(self, log_path: Path, model_repository: Path = DEFAULT_MODEL_REPOSITORY, http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int = 8002, ready_timeout: float = 180.0,
                 env: dict | None = None):
        self.log_path = log_path
        self.model_repository = model_repository
        self.ports = (http_port, grpc_port, metrics_port)
        self.ready_timeout = ready_timeout
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LocalServer:
        files = layout()
        http, grpc, metrics = self.ports
        cmd = server_command(files, self.model_repository, http, grpc, metrics, exit_timeout_secs=10)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self.proc = start(cmd, {**server_env(files), **self.env}, self._log)
        try:
            wait_ready(f"localhost:{http}", self.ready_timeout, self.proc)
        except Exception:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # graceful: unloads the model, which stops the engine
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None:
            join_log(self.proc)
        self._log.close()
