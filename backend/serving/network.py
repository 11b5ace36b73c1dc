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
"""

from __future__ import annotations

import secrets

DEFAULT_HOST = "127.0.0.1"
ADMIN_APIS = ("model-repository", "shared-memory", "trace", "logging")
ADMIN_HEADER = "dllm-admin-key"
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"


def network_args(host: str = DEFAULT_HOST, admin_key: str | None = None, open_admin_apis: bool = False) -> list[str]:
    """tritonserver options for the listeners' address and the restricted APIs. `admin_key`: the value
    clients send to use the administrative APIs (None: a random one, so they are closed);
    `open_admin_apis`: no restriction at all (a trusted network only)."""
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"host: not an address: {host!r}")
    args = [f"--http-address={host}", f"--grpc-address={host}", f"--metrics-address={host}"]
    if open_admin_apis:
        return args
    key = admin_key if admin_key is not None else secrets.token_urlsafe(24)
    if not key or not all(c.isalnum() or c in "-_.~" for c in key):
        raise ValueError("admin_key: use letters, digits and - _ . ~ only (it travels in a header)")
    apis = ",".join(ADMIN_APIS)
    return args + [f"--http-restricted-api={apis}:{ADMIN_HEADER}={key}",
                   f"--grpc-restricted-protocol={apis}:{ADMIN_HEADER}={key}"]


def admin_headers(admin_key: str, protocol: str = "http") -> dict[str, str]:
    """The headers a tritonclient call to an administrative API needs (`headers=`)."""
    return {(GRPC_ADMIN_HEADER if protocol == "grpc" else ADMIN_HEADER): admin_key}
