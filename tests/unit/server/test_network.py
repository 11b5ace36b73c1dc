"""Safe network defaults: loopback only, administrative APIs closed unless a key or openness is asked for,
and the key never on tritonserver's command line (issue 20): it travels in the environment to the shim."""

import os
import subprocess
import sys

import pytest

from backend.server import key_shim, tritonserver
from backend.server.network import (
    ADMIN_HEADER,
    GRPC_ADMIN_HEADER,
    KEY_ENV,
    KEY_PLACEHOLDER,
    admin_env,
    admin_headers,
    network_args,
)

APIS = "model-repository,shared-memory,trace,logging"


def test_defaults_bind_loopback_and_close_the_admin_apis_without_the_key_in_argv(tmp_path):
    files = tritonserver.layout(tmp_path)
    assert files.key_shim is not None and files.key_shim.is_file()  # gcc is part of serve-deps
    cmd = tritonserver.server_command(files, tmp_path)
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(cmd)
    assert f"--http-restricted-api={APIS}:{ADMIN_HEADER}{KEY_PLACEHOLDER}" in cmd
    assert f"--grpc-restricted-protocol={APIS}:{ADMIN_HEADER}{KEY_PLACEHOLDER}" in cmd
    env = tritonserver.server_env(files, {"PATH": "/usr/bin"})
    key = env[KEY_ENV]
    assert len(key) >= 24 and not any(key in a for a in cmd)  # random: nobody knows it
    assert env["LD_PRELOAD"] == str(files.key_shim)
    assert tritonserver.server_env(files, {"PATH": "/usr/bin"})[KEY_ENV] != key  # a new key each start


def test_a_given_key_goes_to_the_environment_with_the_shim_first(tmp_path):
    files = tritonserver.layout(tmp_path)
    env = tritonserver.server_env(files, {"PATH": "/usr/bin", "LD_PRELOAD": "/lib/jemalloc.so",
                                          KEY_ENV: "stale"}, admin_key="s3cret")
    assert env[KEY_ENV] == "s3cret" and env["LD_PRELOAD"] == f"{files.key_shim}:/lib/jemalloc.so"
    assert not any("s3cret" in a for a in tritonserver.server_command(files, tmp_path, host="0.0.0.0"))
    assert admin_env(None, tmp_path / "x.so")[KEY_ENV] != admin_env(None, tmp_path / "x.so")[KEY_ENV]


def test_open_apis_and_headers():
    assert network_args(open_admin_apis=True) == ["--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
                                                  "--metrics-address=127.0.0.1"]
    assert "--http-address=0.0.0.0" in network_args("0.0.0.0")
    assert admin_headers("k", "grpc") == {GRPC_ADMIN_HEADER: "k"} and admin_headers("k") == {ADMIN_HEADER: "k"}


@pytest.mark.parametrize("call, field", [
    (lambda: network_args(""), "host"), (lambda: network_args("a b"), "host"),
    (lambda: admin_env("has space", "x.so"), "admin_key"), (lambda: admin_env("a:b=c", "x.so"), "admin_key"),
    (lambda: admin_env("", "x.so"), "admin_key"), (lambda: admin_env("k" * 257, "x.so"), "admin_key"),
    (lambda: admin_env("ключ", "x.so"), "admin_key")])
def test_bad_settings_name_the_field(call, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        call()


def test_serve_cli_refuses_a_bad_key_without_echoing_it(capsys, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "a b=secret-ish")
    assert tritonserver._main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "admin_key:" in err and "secret-ish" not in err


def test_without_a_compiler_restricted_starts_are_refused(tmp_path, monkeypatch):
    """Fail closed: no shim, no server with restricted APIs (the key would have to go on argv)."""
    monkeypatch.setattr(key_shim, "compiler", lambda: None)
    files = tritonserver.layout(tmp_path)
    assert files.key_shim is None
    with pytest.raises(tritonserver.ServerNotInstalled, match="C compiler"):
        tritonserver.server_command(files, tmp_path)
    with pytest.raises(tritonserver.ServerNotInstalled, match="C compiler"):
        tritonserver.server_env(files, admin_key="k")
    assert "--http-restricted-api" not in " ".join(tritonserver.server_command(files, tmp_path, open_admin_apis=True))


def _argv_seen(shim, env, *args) -> subprocess.CompletedProcess:
    """Run a Python (a real binary, as tritonserver is) with the shim preloaded; it prints the argv its
    main() got, its /proc/self/cmdline and /proc/self/environ, and what a child inherits."""
    code = ("import os, sys, subprocess\n"
            "print(repr(sys.argv[1:]))\n"
            "print(repr(open('/proc/self/cmdline', 'rb').read()))\n"
            "print(repr(open('/proc/self/environ', 'rb').read()))\n"
            "print(repr(subprocess.run(['env'], capture_output=True).stdout))\n")
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("key", ["s3cret-key.~_9", "k" * 256])
def test_the_shim_fills_in_the_key_and_hides_it(tmp_path, key):
    shim = key_shim.build(tmp_path)
    arg = f"{APIS}:{ADMIN_HEADER}{KEY_PLACEHOLDER}"
    out = _argv_seen(shim, {"PATH": "/usr/bin:/bin", KEY_ENV: key, "LD_PRELOAD": str(shim)}, arg, "other")
    assert out.returncode == 0, out.stderr
    argv, cmdline, environ, child_env = (eval(line) for line in out.stdout.splitlines())  # noqa: S307
    assert argv == [f"{APIS}:{ADMIN_HEADER}={key}", "other"]  # what tritonserver's main() parses
    assert key.encode() not in cmdline and KEY_PLACEHOLDER.encode() in cmdline  # what others read
    assert key.encode() not in environ and key.encode() not in child_env
    assert str(shim).encode() not in child_env  # children (the backend stubs) do not preload it again


@pytest.mark.parametrize("env", [{}, {KEY_ENV: ""}, {KEY_ENV: "a b"}, {KEY_ENV: "k" * 257}])
def test_the_shim_stops_the_process_without_a_usable_key(tmp_path, env):
    shim = key_shim.build(tmp_path)
    out = _argv_seen(shim, {"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(shim), **env}, f"x:h{KEY_PLACEHOLDER}")
    assert out.returncode == 2 and "dllm admin-key shim" in out.stderr and not out.stdout
    assert not any(v and v in out.stderr for v in env.values())  # never echoes the key
    # Without a placeholder it changes nothing (tritonserver's children load it until it drops itself).
    plain = _argv_seen(shim, {"PATH": "/usr/bin:/bin", "LD_PRELOAD": str(shim), **env}, "x:h=v")
    assert plain.returncode == 0 and eval(plain.stdout.splitlines()[0]) == ["x:h=v"]  # noqa: S307


def test_the_shim_is_rebuilt_when_its_source_changes(tmp_path):
    shim = key_shim.build(tmp_path)
    built = shim.stat().st_mtime_ns
    assert key_shim.build(tmp_path).stat().st_mtime_ns == built  # up to date: not rebuilt
    stale = key_shim.SOURCE.stat().st_mtime_ns - 10**10
    os.utime(shim, ns=(stale, stale))  # older than its source now
    assert key_shim.build(tmp_path).stat().st_mtime_ns > stale
    assert key_shim.is_elf(shim) and not key_shim.is_elf(key_shim.SOURCE)
