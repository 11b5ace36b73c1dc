"""A real tritonserver for the integration tests: free ports, a log file, a clean stop."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from backend.server.network import KEY_ENV, admin_headers, free_ports
from backend.server.tritonserver import (
    DEFAULT_MODEL_REPOSITORY,
    join_log,
    layout,
    server_command,
    server_env,
    start,
    wait_ready,
)

START_TIMEOUT_S = 180


@dataclass
class RunningServer:
    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    metrics_port: int
    log_path: Path
    env: dict
    admin_key: str = ""  # opens the model-repository (load, unload) and shared-memory APIs

    def admin(self, protocol: str = "grpc") -> dict[str, str]:
        """The `headers=` of a tritonclient call to an administrative API (load, unload)."""
        return admin_headers(self.admin_key, protocol)

    @property
    def http_url(self) -> str:
        return f"localhost:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"localhost:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stubs(self) -> dict[int, str]:
        """The server's Python-backend stub processes: pid -> the /dev/shm region each maps."""
        out = {}
        for child in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split():
            try:
                args = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            region = next((a.decode() for a in args if a.startswith(b"triton_python_backend_shm_region")), None)
            if args and args[0].endswith(b"triton_python_backend_stub") and region:
                out[int(child)] = region
        return out

    def stop_cleanly(self, timeout: float = 30.0) -> int | None:
        """Stop (as Ctrl-C does) and check that nothing is left behind: every stub process gone and
        its /dev/shm region removed (waiting a few seconds for stubs that exit after the server)."""
        stubs = self.stubs()
        code = self.stop(timeout)
        end = time.monotonic() + 15
        while True:
            alive = [pid for pid in stubs if _alive(pid)]
            left = [r for r in stubs.values() if (Path("/dev/shm") / r).exists()]
            if not alive and not left:
                return code
            assert time.monotonic() < end, f"left behind: stub processes {alive}, /dev/shm regions {left}"
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # graceful: unload the model, then exit
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # our own session: the server and its stub
                self.proc.wait(10)
        join_log(self.proc)
        return self.proc.returncode


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def start_server(log_path: Path, model_repository: Path = DEFAULT_MODEL_REPOSITORY, model: str | list[str] = "dllm",
                 extra: list[str] | None = None) -> RunningServer:
    """Start tritonserver in explicit model-control mode with `model` (or each of a list) loaded; raise
    RuntimeError with the log's tail when it does not come up (tests must fail, not skip, when the
    server cannot start)."""
    models = [model] if isinstance(model, str) else list(model)
    files = layout()
    http, grpc, metrics = free_ports(3)
    admin_key = secrets.token_urlsafe(16)  # the restricted APIs stay restricted, as in `make serve`
    cmd = server_command(files, model_repository, http, grpc, metrics, exit_timeout_secs=10,
                         explicit_models=models, extra=extra)
    env = server_env(files, admin_key=admin_key)  # the key goes to the shim, not on the command line
    log = open(log_path, "w")  # noqa: SIM115  (the server writes to it for its whole life)
    # A session of its own: a Ctrl-C in the test terminal must not reach the server directly, and
    # the fallback kill can take the server and its stub together.
    proc = start(cmd, env, log, start_new_session=True)
    # What tests reuse to run clients (perf_analyzer) holds the libraries, not the key.
    client_env = {k: v for k, v in env.items() if k != KEY_ENV}
    server = RunningServer(proc, http, grpc, metrics, log_path, client_env, admin_key)
    started = time.monotonic()
    waiting = [m for m in models if not wait_ready(http, m, START_TIMEOUT_S, alive=lambda: proc.poll() is None)]
    if waiting:
        server.stop(10)
        tail = "\n".join(server.log().splitlines()[-40:])
        raise RuntimeError(f"tritonserver did not get model {waiting[0]!r} ready within {START_TIMEOUT_S} s "
                           f"(exit code {proc.returncode}); command: {' '.join(cmd)}\n--- log tail ---\n{tail}")
    server.startup_s = time.monotonic() - started
    return server
