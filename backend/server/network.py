"""Who may reach a tritonserver we start, and which of its APIs: safe unless asked otherwise.

- Every listener (HTTP, gRPC, metrics) binds to 127.0.0.1 by default: serving other machines is a
  decision (`HOST=0.0.0.0 make serve`, or a specific address).
- The administrative APIs are restricted: model repository (load, unload, index), shared memory
  (registering system or CUDA shared-memory regions, the entry point of the Python-backend
  vulnerability chain fixed after 24.10), trace and logging settings. A client must send the header
  `dllm-admin-key: <key>` (HTTP) or the metadata `triton-grpc-protocol-dllm-admin-key: <key>` (gRPC);
  Triton answers others 403 / UNAVAILABLE "This API is restricted". Without a key of its own the
  server gets a random one that nobody knows: the APIs are closed. Inference, health, metadata,
  model configuration, statistics and metrics stay open.
- The key is never on tritonserver's command line, which every local user can read in
  /proc/<pid>/cmdline: the arguments hold a placeholder, the key travels in the environment
  (/proc/<pid>/environ: the owner only), and the preloaded shim (admin_key_shim.c) fills it in
  before tritonserver's main() runs, then wipes it from the environment.
"""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
ADMIN_APIS = ("model-repository", "shared-memory", "trace", "logging")
ADMIN_HEADER = "dllm-admin-key"
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"
# The environment variable that carries the key to the shim, and what stands for "=<key>" in the
# arguments. Without the shim, "<apis>:dllm-admin-key@DLLM_ADMIN_KEY" has no "=<value>" and Triton
# refuses the option and exits: a server never runs with the placeholder as its key.
KEY_ENV = "DLLM_ADMIN_KEY"
KEY_PLACEHOLDER = f"@{KEY_ENV}"
MAX_KEY_CHARS = 256  # admin_key_shim.c's limit


def network_args(host: str = DEFAULT_HOST, open_admin_apis: bool = False) -> list[str]:
    """tritonserver options for the listeners' address and the restricted APIs (with the key's
    placeholder: `admin_env` carries the key); `open_admin_apis`: no restriction at all (a trusted
    network only)."""
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"host: not an address: {host!r}")
    args = [f"--http-address={host}", f"--grpc-address={host}", f"--metrics-address={host}"]
    if open_admin_apis:
        return args
    apis = ",".join(ADMIN_APIS)
    return args + [f"--http-restricted-api={apis}:{ADMIN_HEADER}{KEY_PLACEHOLDER}",
                   f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}{KEY_PLACEHOLDER}"]


def check_admin_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_CHARS or not all(c.isascii() and (c.isalnum() or c in "-_.~") for c in key):
        # Never echo the key: this message reaches logs.
        raise ValueError(f"admin_key: use 1 to {MAX_KEY_CHARS} letters, digits and - _ . ~ "
                         "(it travels in a header)")
    return key


def admin_env(admin_key: str | None, shim: Path, ld_preload: str | None = None) -> dict[str, str]:
    """The environment entries that give tritonserver its key through the shim: `admin_key` (None: a
    random one, so the APIs are closed) and LD_PRELOAD with the shim first (`ld_preload`: what the
    environment already preloads, kept after it)."""
    key = check_admin_key(admin_key if admin_key is not None else secrets.token_urlsafe(24))
    return {KEY_ENV: key, "LD_PRELOAD": f"{shim}:{ld_preload}" if ld_preload else str(shim)}


def admin_headers(admin_key: str, protocol: str = "http") -> dict[str, str]:
    """The headers a tritonclient call to an administrative API needs (`headers=`)."""
    return {(GRPC_ADMIN_HEADER if protocol == "grpc" else ADMIN_HEADER): admin_key}


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 now (held open together, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind((DEFAULT_HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
