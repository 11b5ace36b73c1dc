"""The stub's watcher: once tritonserver is gone, a stub that did not exit is killed and its shared
memory region removed; while the server lives, or after stop(), it does nothing."""

import subprocess
import time
import uuid
from pathlib import Path

from backend.server.stub_reaper import REGION_PREFIX, StubReaper, stub_region


def _sleeper():
    # Ignores SIGTERM and SIGINT, as a deadlocked stub does.
    return subprocess.Popen(["/bin/sh", "-c", "trap '' TERM INT; while :; do sleep 0.1; done"])


def _region():
    path = Path("/dev/shm") / f"{REGION_PREFIX}_test_{uuid.uuid4()}"
    path.write_bytes(b"x")
    return path


def test_kills_a_stub_left_behind_and_removes_its_region():
    server, stub, region = _sleeper(), _sleeper(), _region()
    reaper = StubReaper(server.pid, stub.pid, region.name, grace_s=1, poll_s=0.1)
    try:
        time.sleep(0.5)
        assert stub.poll() is None and region.exists()  # the server lives: nothing happens
        server.kill()
        server.wait()
        assert stub.wait(timeout=10) == -9
        end = time.monotonic() + 5
        while region.exists() and time.monotonic() < end:
            time.sleep(0.05)
        assert not region.exists()
    finally:
        for p in (server, stub):
            p.kill()
            p.wait()
        region.unlink(missing_ok=True)
        reaper.stop()


def test_stopped_reaper_leaves_everything_alone():
    server, stub, region = _sleeper(), _sleeper(), _region()
    try:
        reaper = StubReaper(server.pid, stub.pid, region.name, grace_s=1, poll_s=0.1)
        reaper.stop()
        server.kill()
        server.wait()
        time.sleep(1.5)
        assert stub.poll() is None and region.exists()
    finally:
        for p in (server, stub):
            p.kill()
            p.wait()
        region.unlink(missing_ok=True)


def test_region_from_the_stub_command_line(tmp_path):
    cmdline = tmp_path / "cmdline"
    cmdline.write_bytes(b"/x/triton_python_backend_stub\0/m/model.py\0" + REGION_PREFIX.encode() + b"_abc\0"
                        b"1048576\0")
    assert stub_region(cmdline) == f"{REGION_PREFIX}_abc"
    cmdline.write_bytes(b"python\0-m\0pytest\0")
    assert stub_region(cmdline) is None
    assert StubReaper.for_this_stub() is None  # pytest is no stub
