"""nginx (Debian's package: `apt-get install nginx-light`) as the L7 balancer in front of tritonserver
replicas, for benchmarks/replicas.py: HTTP through `proxy_pass`, gRPC (HTTP/2) through `grpc_pass`,
`least_conn` over the replicas, a replica that refuses connections taken out for a while and the request
passed on to the next one. Runs in the foreground as our child, listening on 127.0.0.1 only, with
everything (config, pid, logs, temp files) in one folder."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CONFIG = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  # Replicas: least_conn sends each new request (HTTP) or connection's stream (gRPC) to the replica with
  # the fewest in flight; one that refuses connections is skipped for fail_timeout.
  upstream replicas_http {{
    least_conn;
{http_servers}
  }}
  upstream replicas_grpc {{
    least_conn;
{grpc_servers}
  }}
  server {{
    listen 127.0.0.1:{http_port};
    location / {{
      proxy_pass http://replicas_http;
      proxy_http_version 1.1;
      proxy_buffering off;            # generate_stream: pass each SSE event on as it comes
      proxy_read_timeout 600s;        # a long generation sends nothing for a while
      proxy_next_upstream error timeout;
    }}
  }}
  server {{
    listen 127.0.0.1:{grpc_port} http2;
    location / {{
      grpc_pass grpc://replicas_grpc;
      grpc_read_timeout 600s;
      grpc_send_timeout 600s;
      grpc_next_upstream error timeout http_502 http_503;
    }}
  }}
}}
"""


class BalancerMissing(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Balancer:
    proc: subprocess.Popen
    http_port: int
    grpc_port: int
    folder: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish open requests, then exit
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def errors(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""


def start_balancer(folder: Path, replicas: list[tuple[int, int]], fail_timeout_s: int = 10) -> Balancer:
    """nginx in front of `replicas` ((http_port, grpc_port) each, on 127.0.0.1)."""
    binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if binary is None:
        raise BalancerMissing("nginx is not installed: apt-get install nginx-light (Debian's package)")
    folder.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = _free_port(), _free_port()

    def servers(index: int) -> str:
        return "\n".join(f"    server 127.0.0.1:{r[index]} max_fails=1 fail_timeout={fail_timeout_s}s;"
                         for r in replicas)

    config = CONFIG.format(user="user root;\n" if os.geteuid() == 0 else "", dir=folder,
                           http_servers=servers(0), grpc_servers=servers(1), http_port=http_port,
                           grpc_port=grpc_port)
    (folder / "nginx.conf").write_text(config)
    proc = subprocess.Popen([binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=open(folder / "stderr.log", "w"))  # noqa: SIM115
    balancer = Balancer(proc, http_port, grpc_port, folder)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise BalancerMissing(f"nginx exited ({proc.returncode}): {(folder / 'stderr.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", grpc_port), timeout=1):
                return balancer
        except OSError:
            time.sleep(0.1)
    balancer.stop()
    raise BalancerMissing("nginx did not listen within 10 s")
