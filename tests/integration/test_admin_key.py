"""The admin key of the running test server (issue 20): not on the command line or in the environment of
tritonserver or of any process it started (the Python-backend stubs inherit its environment), not in
its log, unreadable to another local user anywhere in /proc, and it still opens the restricted APIs
over HTTP and gRPC while a request without it is refused."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from backend.server.network import KEY_PLACEHOLDER

# Run as another user (nobody): every /proc file it may read, searched for the key (read from stdin,
# so that the key is on no command line here either).
SCAN = """
import os, sys
key = sys.stdin.buffer.read()
hits = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    for name in ("cmdline", "environ", "status", "stat", "maps", "auxv", "sched"):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                if key in f.read(1 << 22):
                    hits.append(f"/proc/{pid}/{name}")
        except OSError:
            pass
print(hits)
"""


def descendants(pid: int) -> list[int]:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        for child in children:
            out += descendants(int(child))
    return out


def test_the_key_is_on_no_command_line_or_environment(server):
    key = server.admin_key.encode()
    pids = descendants(server.proc.pid)
    assert len(pids) >= 2, "the stub (a child of tritonserver) should be running"
    cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
    assert KEY_PLACEHOLDER.encode() in cmdline  # the restriction is there, as a placeholder
    for pid in pids:
        for name in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{pid}/{name}").read_bytes()
            except OSError:  # a short-lived helper process that has exited
                continue
            assert key not in data, f"the admin key is in /proc/{pid}/{name}"
    assert server.admin_key not in server.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_another_local_user_cannot_find_the_key_in_proc(server):
    out = subprocess.run(["/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable, "-c", SCAN],
                         input=server.admin_key.encode(), capture_output=True, user=65534, group=65534,
                         extra_groups=[], timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "[]", out.stdout.decode()


def _http_logging(server, headers: dict) -> int:
    req = urllib.request.Request(f"http://{server.http_url}/v2/logging", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_key_still_opens_the_restricted_apis(server):
    assert _http_logging(server, {}) == 403
    assert _http_logging(server, {"dllm-admin-key": server.admin_key + "x"}) == 403
    assert _http_logging(server, server.admin("http")) == 200
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_log_settings()
        assert "log_info" in str(client.get_log_settings(headers=server.admin("grpc")))
        assert client.get_model_repository_index(headers=server.admin("grpc")) is not None
    finally:
        client.close()
