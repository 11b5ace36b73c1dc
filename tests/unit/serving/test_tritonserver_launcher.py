"""The launcher lays out a Python backend directory from the nvidia-pytriton wheel."""

import sys

import pytest

from backend.serving import tritonserver


def test_layout_links_the_stub_for_this_python(tmp_path):
    files = tritonserver.layout(tmp_path)
    py = tmp_path / "backends" / "python"
    for name in ("libtriton_python.so", "triton_python_backend_utils.py", "triton_python_backend_stub"):
        assert (py / name).exists(), name
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert f"python_backend_stubs/{version}/" in str((py / "triton_python_backend_stub").resolve())
    assert files.binary.is_file() and (tmp_path / "lib" / "libb64.so.0d").exists()
    assert tritonserver.layout(tmp_path) == files  # idempotent


def test_environment_and_command(tmp_path):
    files = tritonserver.layout(tmp_path)
    env = tritonserver.server_env(files, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/x"})
    assert env["PATH"].split(":")[0] == str(files.venv_bin)
    assert env["LD_LIBRARY_PATH"].endswith(":/x")
    cmd = tritonserver.server_command(files, tmp_path, 1, 2, 3, exit_timeout_secs=5, explicit_models=["dllm"])
    assert {"--http-port=1", "--grpc-port=2", "--metrics-port=3", "--exit-timeout-secs=5",
            "--model-control-mode=explicit", "--load-model=dllm"} <= set(cmd)


def test_missing_wheel_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(tritonserver.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(tritonserver.ServerNotInstalled, match="nvidia-pytriton"):
        tritonserver.layout()
