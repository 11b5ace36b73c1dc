"""Make sure the Python-backend stub does not outlive tritonserver.

Normally tritonserver unloads the model (finalize), stops the stub and removes the stub's
`/dev/shm` region. When it exits without unloading (Triton 2.51 keeps a model loaded forever after a
request it rejected itself on a gRPC stream was cancelled, and then exits at its exit timeout), the
stub is on its own: its health thread notices the missing parent and exits, unless a call to the
server was in flight at that moment (metrics, logging, cancellation checks wait for a reply that
never comes while holding the stub's locks), in which case it hangs forever, ignoring SIGTERM, and
its shared-memory region stays behind.

A tiny shell loop beside the stub covers that case: once the server is gone it gives the stub a
grace period to exit by itself, then kills it and removes its region. It is a separate process
because a stub deadlocked that way also holds the GIL, so no Python thread in it could act.
`stop()` (from finalize) ends it when the model unloads normally.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REGION_PREFIX = "triton_python_backend_shm_region"

_SCRIPT = r"""
trap '' INT HUP QUIT
server=$1 stub=$2 region=$3 grace=$4 poll=$5
while kill -0 "$server" 2>/dev/null; do
  kill -0 "$stub" 2>/dev/null || exit 0
  sleep "$poll"
done
while [ "$grace" -gt 0 ] && kill -0 "$stub" 2>/dev/null; do
  sleep 1
  grace=$((grace - 1))
done
if kill -0 "$stub" 2>/dev/null; then
  kill -9 "$stub"
  echo "dllm: the Python-backend stub $stub was still running after tritonserver $server exited; killed it" >&2
fi
if [ -n "$region" ]; then rm -f "/dev/shm/$region"; fi
"""


def stub_region(cmdline: Path = Path("/proc/self/cmdline")) -> str | None:
    """The shared-memory region named on the stub's command line, or None outside a stub."""
    try:
        args = cmdline.read_bytes().split(b"\0")
    except OSError:
        return None
    return next((a.decode() for a in args if a.startswith(REGION_PREFIX.encode())), None)


class StubReaper:
    def __init__(self, server_pid: int, stub_pid: int, region: str | None, grace_s: int = 5,
                 poll_s: float = 1.0):
        # A session of its own: Ctrl-C in the server's terminal must not end the watcher first.
        self._proc = subprocess.Popen(
            ["/bin/sh", "-c", _SCRIPT, "dllm-stub-reaper", str(server_pid), str(stub_pid), region or "",
             str(int(grace_s)), str(poll_s)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)

    @classmethod
    def for_this_stub(cls) -> StubReaper | None:
        """A reaper for the current process, when it is a Python-backend stub."""
        region = stub_region()
        if region is None:
            return None
        return cls(os.getppid(), os.getpid(), region)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
