"""If the engine loop dies anyway (fault injection: an exception escapes Engine.step), nobody is left
hanging: the running requests end at once with an INTERNAL error, later ones are refused the same
way, the log says why, and the model still unloads cleanly."""

from __future__ import annotations

import time
from pathlib import Path

import tritonclient.grpc as grpcclient

from backend.server.probe import check
from tests.integration.calls import GrpcStreams, grpc_generate, grpc_inputs
from tests.integration.conftest import MODEL_REPOSITORY

LONG = {"max_tokens": 256, "block_length": 8, "steps": 256, "ignore_eos": True}
# Appended to a copy of the real model.py: the engine's third iteration raises.
INJECTION = '''

_real_step = Engine.step
_steps = [0]


def _dying_step(self):
    _steps[0] += 1
    if _steps[0] == 3:
        raise IndexError("injected failure")
    return _real_step(self)


Engine.step = _dying_step
'''


def _extra_repository(server) -> Path:
    """The second model repository the session server serves (the one for models that misbehave)."""
    repos = [a.split("=", 1)[1] for a in server.proc.args if a.startswith("--model-repository=")]
    return Path(repos[-1])


def test_a_dead_engine_loop_fails_every_request_at_once(server):
    root = _extra_repository(server) / "dllm_dies"
    (root / "1").mkdir(parents=True)
    (root / "config.pbtxt").write_text((MODEL_REPOSITORY / "dllm" / "config.pbtxt").read_text())
    (root / "1" / "model.py").write_text((MODEL_REPOSITORY / "dllm" / "1" / "model.py").read_text() + INJECTION)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.load_model("dllm_dies", headers=server.admin(), client_timeout=180)
        streams = GrpcStreams(server.grpc_url)
        try:
            for i in range(2):
                streams.send(f"r{i}", grpc_inputs(f"copy abc{i} =", LONG, stream=True), model="dllm_dies")
            start = time.monotonic()
            results = streams.wait_all(30)
        finally:
            streams.close()
        assert time.monotonic() - start < 30
        for rid in ("r0", "r1"):
            assert results[rid].finals == 1, results[rid]
            assert results[rid].error.startswith("internal error: the engine has stopped (IndexError: injected"), \
                results[rid].error
        later = _generate(server, "dllm_dies")
        assert later.error is not None and later.error.startswith("internal error: the engine has stopped")
        assert "the engine loop has stopped (IndexError: injected failure)" in server.log()
        assert grpc_generate(server.grpc_url, "12+34=", {"max_tokens": 16}).error is None  # dllm is unaffected
        # Triton 2.51 still calls the model ready; the readiness probe (dllm:engine_up) does not.
        assert client.is_model_ready("dllm_dies")
        why = _wait_not_ready(server, "dllm_dies")
        assert why.startswith("the engine loop of dllm_dies") and "has stopped" in why, why
        assert check(http_port=server.http_port, metrics_port=server.metrics_port, model="dllm") is None
        unloads = server.log().count("successfully unloaded 'dllm_dies'")
        client.unload_model("dllm_dies", headers=server.admin(), client_timeout=60)
        end = time.monotonic() + 60
        while server.log().count("successfully unloaded 'dllm_dies'") == unloads:
            assert time.monotonic() < end, "the model with a dead engine did not unload"
            time.sleep(0.2)
    finally:
        client.close()


def _wait_not_ready(server, model: str) -> str:
    """The probe's reason (the gauge is refreshed twice a second by the response thread)."""
    end = time.monotonic() + 10
    while (why := check(http_port=server.http_port, metrics_port=server.metrics_port, model=model)) is None:
        assert time.monotonic() < end, "the probe still calls the dead engine ready"
        time.sleep(0.2)
    return why


def _generate(server, model: str):
    streams = GrpcStreams(server.grpc_url)
    try:
        streams.send("one", grpc_inputs("1+1=", {"max_tokens": 8}, stream=True), model=model)
        return streams.wait_all(30)["one"]
    finally:
        streams.close()
