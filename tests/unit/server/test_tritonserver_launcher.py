"""The launcher lays out a Python backend directory from the nvidia-pytriton wheel."""

import sys

import pytest

from backend.server import tritonserver


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


def test_cpu_only_command_turns_off_gpu_features(tmp_path):
    files = tritonserver.layout(tmp_path)
    cpu = tritonserver.server_command(files, tmp_path, gpu=False)
    gpu = tritonserver.server_command(files, tmp_path, gpu=True)
    assert set(tritonserver.CPU_ONLY_ARGS) <= set(cpu)
    assert not set(tritonserver.CPU_ONLY_ARGS) & set(gpu)
    # arguments the caller adds come last, so they can override
    assert tritonserver.server_command(files, tmp_path, gpu=False, extra=["--x"])[-1] == "--x"


def test_start_copies_the_log_without_the_driverless_error(tmp_path):
    script = ("echo one; echo 'E1126 10:29:21.3 1 server.cc:241] \"CudaDriverHelper has not been initialized.\"' >&2; "
              "echo two; echo 'E1126 x \"CudaDriverHelper has not been initialized.\"'; echo three >&2")
    log_path = tmp_path / "log"
    with open(log_path, "w") as log:
        proc = tritonserver.start(["sh", "-c", script], {"PATH": "/usr/bin:/bin"}, log)
        assert proc.wait(10) == 0
        tritonserver.join_log(proc)
    lines = log_path.read_text().splitlines()
    assert lines == ["one", tritonserver.DRIVERLESS_NOTE.strip(), "two", "three"]
    assert "CudaDriverHelper has not been initialized" not in log_path.read_text()


def test_perf_analyzer_wrapper_sets_the_library_path(tmp_path):
    venv_bin = tmp_path / "bin"
    venv_bin.mkdir()
    files = tritonserver.ServerFiles(binary=tmp_path / "tritonserver", backend_dir=tmp_path,
                                     lib_dirs=(tmp_path / "libs",), venv_bin=venv_bin)
    assert tritonserver.wrap_perf_analyzer(files, tmp_path / "real") is None  # tritonclient not installed
    (venv_bin / "perf_analyzer").write_bytes(b"\x7fELF fake executable")
    entry = tritonserver.wrap_perf_analyzer(files, tmp_path / "real")
    assert (tmp_path / "real" / "perf_analyzer").read_bytes() == b"\x7fELF fake executable"
    script = entry.read_text()
    assert f'LD_LIBRARY_PATH="{tmp_path / "libs"}' in script
    assert f'exec "{tmp_path / "real" / "perf_analyzer"}"' in script
    assert tritonserver.wrap_perf_analyzer(files, tmp_path / "real").read_text() == script  # idempotent
    (venv_bin / "perf_analyzer").write_bytes(b"\x7fELF reinstalled")  # pip put its copy back
    tritonserver.wrap_perf_analyzer(files, tmp_path / "real")
    assert (tmp_path / "real" / "perf_analyzer").read_bytes() == b"\x7fELF reinstalled"
    assert entry.read_text() == script
