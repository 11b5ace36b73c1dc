"""Run the tritonserver 2.51 that ships inside the `nvidia-pytriton` wheel, outside of PyTriton.

Everything learned about making that binary work from a virtual environment lives here, so that
`make serve`, the integration tests and the load-test scripts start it the same way:

- the Python backend directory must hold `libtriton_python.so`, `triton_python_backend_utils.py` and
  the stub built for the running Python (the wheel has one per version), so we lay one out in
  `<venv>/triton/backends/python/` with links into the wheel;
- the server and the stub load their shared libraries from the wheel's `nvidia_pytriton.libs/`, which
  is not on their RUNPATH once linked elsewhere, hence `LD_LIBRARY_PATH`;
- the stub embeds the system libpython and only sees the venv's packages (torch, this project) when
  the venv's `bin/` comes first on `PATH` at server start;
- Perf Analyzer (from `tritonclient[all]`) wants `libb64.so.0d` and `libcudart.so.12`: the wheel's
  libraries hold both under hashed names, so `<venv>/triton/lib/` gets links with the plain names, and
  `<venv>/bin/perf_analyzer` becomes a script that puts them on `LD_LIBRARY_PATH` and runs the real
  binary, moved to `<venv>/triton/bin/`;
- the admin key reaches tritonserver through the environment and a preloaded shim, never its command
  line (network.py, key_shim.py): `<venv>/triton/lib/` holds the shim, built with the C compiler.

    python -m backend.server.tritonserver layout      # lay out, print the paths
    python -m backend.server.tritonserver serve [--http-port 8000 ...] [-- more tritonserver args]
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from backend.server import key_shim
from backend.server.network import DEFAULT_HOST, KEY_ENV, admin_env, network_args
from backend.server.perf_analyzer import wrap_perf_analyzer

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "model_repository"
# Each Python-backend stub maps its shared memory region here; Docker's default 64 MiB is too small
# for many concurrent streams.
MIN_SHM_BYTES = 256 << 20
# Without a usable CUDA driver, tritonserver's GPU metrics (NVML, DCGM) and its pinned host-memory pool
# (allocated through CUDA) fail at start-up and log errors; these options turn them off.
CPU_ONLY_ARGS = ("--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0")
# What 2.51 logs as an error on every machine where it cannot dlopen `libcuda.so`, whatever the options:
# its core creates a CUDA block manager (growable memory for implicit sequence state, which this model
# does not use) unconditionally. `start` leaves the line out and says so once.
DRIVERLESS_NOISE = '"CudaDriverHelper has not been initialized."'
DRIVERLESS_NOTE = ("dllm-serve: no CUDA driver library, so tritonserver's CUDA block manager is off (unused here); "
                   "its start-up error about that is left out of this log\n")


class ServerNotInstalled(RuntimeError):
    pass


@dataclass(frozen=True)
class ServerFiles:
    binary: Path  # tritonserver
    backend_dir: Path  # pass as --backend-directory
    lib_dirs: tuple[Path, ...]  # prepend to LD_LIBRARY_PATH
    venv_bin: Path  # prepend to PATH
    key_shim: Path | None = None  # the admin-key shim (None: no C compiler to build it)


def _wheel_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerNotInstalled("nvidia-pytriton is not installed in this Python "
                                 f"({sys.executable}); run `make serve` or "
                                 "`pip install nvidia-pytriton==0.7.0`")
    return Path(list(spec.submodule_search_locations)[0])


def _link(target: Path, link: Path) -> None:
    if not target.exists():
        raise ServerNotInstalled(f"{target} is missing from the nvidia-pytriton wheel")
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        link.unlink()
    link.symlink_to(target)


def layout(dest: Path | None = None) -> ServerFiles:
    """Create (idempotently) the backend and library directories under `dest` (default `<venv>/triton`)."""
    wheel = _wheel_root()
    server = wheel / "tritonserver"
    libs = wheel.parent / "nvidia_pytriton.libs"
    dest = Path(dest) if dest else Path(sys.prefix) / "triton"
    py_dir = dest / "backends" / "python"
    lib_dir = dest / "lib"
    py_dir.mkdir(parents=True, exist_ok=True)
    lib_dir.mkdir(parents=True, exist_ok=True)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerNotInstalled(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    _link(server / "backends" / "python" / "libtriton_python.so", py_dir / "libtriton_python.so")
    _link(server / "backends" / "python" / "triton_python_backend_utils.py", py_dir / "triton_python_backend_utils.py")
    _link(stub, py_dir / "triton_python_backend_stub")
    for plain, prefix in (("libb64.so.0d", "libb64-"), ("libcudart.so.12", "libcudart-")):
        hashed = sorted(libs.glob(f"{prefix}*"))
        if hashed:
            _link(hashed[0], lib_dir / plain)
    try:
        shim = key_shim.build(lib_dir)
    except key_shim.ShimBuildError as e:
        raise ServerNotInstalled(str(e)) from None
    files = ServerFiles(binary=server / "bin" / "tritonserver", backend_dir=dest / "backends",
                        lib_dirs=(libs, lib_dir), venv_bin=Path(sys.executable).parent, key_shim=shim)
    if dest == Path(sys.prefix) / "triton":
        wrap_perf_analyzer(files, dest / "bin")
    return files


def server_env(files: ServerFiles, base: dict | None = None, admin_key: str | None = None) -> dict:
    """The environment tritonserver (and perf_analyzer) need: libraries, the venv first on PATH, and the
    admin key (`admin_key`, else a random one) with the shim that hands it to tritonserver."""
    env = dict(os.environ if base is None else base)
    libs = ":".join(str(p) for p in files.lib_dirs)
    env["LD_LIBRARY_PATH"] = f"{libs}:{env['LD_LIBRARY_PATH']}" if env.get("LD_LIBRARY_PATH") else libs
    env["PATH"] = f"{files.venv_bin}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop(KEY_ENV, None)  # only what admin_env sets, and only with the shim that wipes it
    if files.key_shim is not None:
        env.update(admin_env(admin_key, files.key_shim, env.get("LD_PRELOAD")))
    elif admin_key is not None:
        raise ServerNotInstalled(key_shim.NO_COMPILER)
    return env


def cuda_usable() -> bool:
    """Whether the CUDA driver loads and sees a GPU (the test tritonserver makes, without importing torch)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        count = ctypes.c_int(0)
        return cuda.cuInit(0) == 0 and cuda.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0
    except (OSError, AttributeError):
        return False


def server_command(files: ServerFiles, model_repository: Path = DEFAULT_MODEL_REPOSITORY, http_port: int = 8000,
                   grpc_port: int = 8001, metrics_port: int = 8002, exit_timeout_secs: int | None = None,
                   explicit_models: list[str] | None = None, extra: list[str] | None = None,
                   gpu: bool | None = None, host: str = DEFAULT_HOST, open_admin_apis: bool = False) -> list[str]:
    """tritonserver's command line. `explicit_models`: start in explicit model-control mode with these
    models loaded (the mode in which clients may unload and load models). `gpu=False` (the default where
    `cuda_usable()` is false) turns off the GPU-only features that log errors without a GPU. `host`,
    `open_admin_apis`: who may connect and use the administrative APIs (network.py; by default
    127.0.0.1 only, and those APIs restricted by the key that `server_env` passes)."""
    if not open_admin_apis and files.key_shim is None:
        # Fail closed: without the shim the key would have to go on the command line.
        raise ServerNotInstalled(f"{key_shim.NO_COMPILER} (or, on a trusted machine, open the APIs to everyone)")
    if not open_admin_apis and not key_shim.is_elf(files.binary):
        raise ServerNotInstalled(f"{files.binary} is not a binary: the admin-key shim must be preloaded into "
                                 "tritonserver itself")
    cmd = [str(files.binary), f"--model-repository={model_repository}", f"--backend-directory={files.backend_dir}",
           f"--http-port={http_port}", f"--grpc-port={grpc_port}", f"--metrics-port={metrics_port}",
           "--allow-metrics=true", *network_args(host, open_admin_apis)]
    if exit_timeout_secs is not None:
        cmd.append(f"--exit-timeout-secs={exit_timeout_secs}")
    if explicit_models is not None:
        cmd.append("--model-control-mode=explicit")
        cmd += [f"--load-model={m}" for m in explicit_models]
    if not (cuda_usable() if gpu is None else gpu):
        cmd += CPU_ONLY_ARGS
    return cmd + list(extra or [])


def start(cmd: list[str], env: dict, log, **popen_kwargs) -> subprocess.Popen:
    """Start tritonserver with its stdout and stderr copied line by line to `log` (a text file), less the
    DRIVERLESS_NOISE line. The returned process is tritonserver itself: signal it as usual; the copy ends
    when it exits (`join_log(proc)` waits for the last lines)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen_kwargs)

    def copy() -> None:
        noted = False
        for raw in proc.stdout:
            line = raw.decode("utf-8", errors="replace")
            if DRIVERLESS_NOISE in line:
                line, noted = ("" if noted else DRIVERLESS_NOTE), True
            log.write(line)
            log.flush()

    proc.log_thread = threading.Thread(target=copy, name="tritonserver-log", daemon=True)
    proc.log_thread.start()
    return proc


def join_log(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if getattr(proc, "log_thread", None) is not None:
        proc.log_thread.join(timeout)


def shm_warning(path: str = "/dev/shm") -> str | None:
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return f"{path} is missing: the Python backend needs shared memory"
    if free < MIN_SHM_BYTES:
        return (f"{path} has only {free >> 20} MiB free; the Python backend may fail under load "
                "(in Docker, pass --shm-size=1g)")
    return None


def wait_ready(http_port: int, model: str | None = None, timeout: float = 600.0, host: str = "127.0.0.1",
               alive=lambda: True) -> bool:
    """Poll the server's readiness (and the model's, if named) until it answers or `alive()` turns false."""
    path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
    end = time.monotonic() + timeout
    while time.monotonic() < end and alive():
        try:
            with urllib.request.urlopen(f"http://{host}:{http_port}{path}", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.server.tritonserver", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("layout", help="lay out the backend directory and print the paths and environment")
    ready = sub.add_parser("wait-ready", help="exit 0 once the server (and model) are ready, 1 on timeout")
    ready.add_argument("--http-port", type=int, default=8000)
    ready.add_argument("--host", default="127.0.0.1", help="where to poll (not 0.0.0.0)")
    ready.add_argument("--model")
    ready.add_argument("--timeout", type=float, default=600.0)
    serve = sub.add_parser("serve", help="start tritonserver in the foreground (Ctrl-C stops it)")
    serve.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--exit-timeout-secs", type=int, default=10)
    serve.add_argument("--host", default=DEFAULT_HOST,
                       help="address every listener binds to (default 127.0.0.1; 0.0.0.0 serves other machines)")
    serve.add_argument("--open-admin-apis", action="store_true",
                       help="no restriction on the model-repository, shared-memory, trace and logging APIs (a "
                            "trusted network only); otherwise clients need the key in $DLLM_ADMIN_KEY (an "
                            "option would put it on the command line), or nobody has it when it is unset")
    serve.add_argument("extra", nargs="*", help="more tritonserver arguments, after --")
    args = ap.parse_args(argv)
    if args.cmd == "wait-ready":
        return 0 if wait_ready(args.http_port, args.model, args.timeout, host=args.host) else 1
    try:
        files = layout()
    except ServerNotInstalled as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.cmd == "layout":
        env = server_env(files, admin_key=None)
        print(f"tritonserver: {files.binary}\n--backend-directory={files.backend_dir}")
        print(f"admin-key shim: {files.key_shim}" if files.key_shim else f"warning: {key_shim.NO_COMPILER}")
        print(f"export LD_LIBRARY_PATH={env['LD_LIBRARY_PATH']}\nexport PATH={files.venv_bin}:$PATH")
        return 0
    if warning := shm_warning():
        print(f"warning: {warning}", file=sys.stderr)
    try:
        cmd = server_command(files, args.model_repository, args.http_port, args.grpc_port, args.metrics_port,
                             args.exit_timeout_secs, extra=args.extra, host=args.host,
                             open_admin_apis=args.open_admin_apis)
        env = server_env(files, admin_key=os.environ.get(KEY_ENV) or None)
    except (ValueError, ServerNotInstalled) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    # tritonserver runs in our process group, so a Ctrl-C in the terminal reaches it directly and it shuts
    # down gracefully (unloading the model, which stops the engine); a signal sent to this process alone is
    # passed on (a second SIGINT is harmless to it). We stay to copy its log (see `start`).
    started: list[subprocess.Popen] = []

    def forward(signum, _frame):
        if started and started[0].poll() is None:
            started[0].send_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)  # a handler, not SIG_IGN: exec resets it, so tritonserver gets its own
    proc = start(cmd, env, sys.stdout)
    started.append(proc)
    code = proc.wait()
    join_log(proc)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(_main())
