"""`make serve-openai`: tritonserver (as `make serve` starts it) and the OpenAI-compatible server, together
in the foreground; Ctrl-C (or SIGTERM) stops both cleanly, and if either exits the other is stopped.

    python -m openai_server.launch [--host 127.0.0.1] [--port 9000] [--http-port 8000 --grpc-port 8001
                                   --metrics-port 8002] [--model-repository model_repository] [-- tritonserver args]

The same network rule as `make serve`: every listener on 127.0.0.1 unless --host names another address
(0.0.0.0: every interface). The administrative APIs of Triton stay closed unless the environment holds a
key (ADMIN_KEY=<secret>, or ADMIN_KEY_FILE=<file>, handed to tritonserver through its environment only)
or --open-admin-apis is given.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from backend.server.network import KEY_ENV  # where backend.server.tritonserver reads the admin key

REPO = Path(__file__).resolve().parents[1]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m openai_server.launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=9000, help="the OpenAI-compatible server's port")
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--model-repository", type=Path, default=REPO / "model_repository")
    ap.add_argument("--model", default="dllm")
    ap.add_argument("--open-admin-apis", action="store_true")
    ap.add_argument("--ready-timeout", type=float, default=900.0)
    ap.add_argument("extra", nargs="*", help="more tritonserver arguments, after --")
    return ap


def _triton_env() -> dict:
    env = dict(os.environ)
    if env.get("ADMIN_KEY"):
        env[KEY_ENV] = env.pop("ADMIN_KEY")
    if env.get("ADMIN_KEY_FILE"):
        env[KEY_ENV] = Path(env.pop("ADMIN_KEY_FILE")).read_text().splitlines()[0].strip()
    return env


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    py = sys.executable
    local = "127.0.0.1" if args.host == "0.0.0.0" else args.host
    triton_cmd = [py, "-m", "backend.server.tritonserver", "serve", "--model-repository", str(args.model_repository),
                  "--host", args.host, "--http-port", str(args.http_port), "--grpc-port", str(args.grpc_port),
                  "--metrics-port", str(args.metrics_port)]
    if args.open_admin_apis:
        triton_cmd.append("--open-admin-apis")
    if args.extra:
        triton_cmd += ["--", *args.extra]
    openai_cmd = [py, "-m", "openai_server", "--host", args.host, "--port", str(args.port),
                  "--triton-url", f"{local}:{args.grpc_port}", "--model", args.model]
    # Both in our process group: a Ctrl-C in the terminal reaches each directly. The key only in Triton's
    # environment.
    triton = subprocess.Popen(triton_cmd, cwd=REPO, env=_triton_env())
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, "ADMIN_KEY", "ADMIN_KEY_FILE")}
    server = subprocess.Popen(openai_cmd, cwd=REPO, env=env)
    children = (triton, server)
    stopping: list[int] = []

    def stop(signum=signal.SIGINT, _frame=None):
        stopping.append(signum)
        if triton.poll() is None:
            triton.send_signal(signal.SIGINT)  # graceful: unloads the model (a second SIGINT is harmless)
        if server.poll() is None:
            # SIGTERM, not SIGINT: uvicorn takes a second SIGINT (the terminal's and ours) as "force quit".
            server.send_signal(signal.SIGTERM)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)

    health = f"http://{local}:{args.port}/health"
    deadline = time.monotonic() + args.ready_timeout
    announced = False
    while all(c.poll() is None for c in children):
        if not announced and not stopping and _ready(health):
            announced = True
            _announce(args, local)
        if not announced and time.monotonic() > deadline:
            print(f"error: not ready after {args.ready_timeout:.0f} s", file=sys.stderr)
            stop()
        time.sleep(0.5)
    if not stopping:
        which = "tritonserver" if triton.poll() is not None else "the OpenAI-compatible server"
        print(f"{which} exited (code {children[0 if which == 'tritonserver' else 1].returncode}): stopping the other",
              file=sys.stderr)
        stop()
    codes = [c.wait() for c in children]
    # uvicorn ends a graceful shutdown by raising the signal that asked for it again: that is a clean stop.
    clean = (0, -signal.SIGTERM, -signal.SIGINT) if stopping else (0,)
    return next((c if c >= 0 else 128 - c for c in codes if c not in clean), 0)


def _announce(args, local: str) -> None:
    base = f"http://{local}:{args.port}/v1"
    print(f"""
==> OpenAI-compatible API on {args.host}:{args.port} ({base}), in front of tritonserver (HTTP :{args.http_port},
gRPC :{args.grpc_port}, metrics :{args.metrics_port}/metrics). Try:
  curl -s {base}/chat/completions -H 'Content-Type: application/json' \\
       -d '{{"model": "dllm", "messages": [{{"role": "user", "content": "1234+4321="}}]}}'
  python -c 'import openai; c = openai.OpenAI(base_url="{base}", api_key="none"); \\
    r = c.chat.completions.create(model="dllm", messages=[{{"role": "user", "content": "sort dcba ="}}]); \\
    print(r.choices[0].message.content)'
Ctrl-C stops both.
""", flush=True)


if __name__ == "__main__":
    sys.exit(main())
