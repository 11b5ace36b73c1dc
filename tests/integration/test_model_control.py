"""Explicit model control: after streaming traffic the model unloads (finalize lets go of everything)
and loads again, and serves."""

from __future__ import annotations

import time

import tritonclient.grpc as grpcclient

from tests.integration.calls import grpc_generate

SAMPLING = {"max_tokens": 16, "block_length": 16, "steps": 16}


def test_unload_and_reload_after_streaming(server, expected):
    for prompt in ("12+34=", "copy xyz ="):
        assert grpc_generate(server.grpc_url, prompt, SAMPLING, stream=True).error is None
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        unloads = server.log().count("successfully unloaded 'dllm'")
        client.unload_model("dllm")
        end = time.monotonic() + 30
        while server.log().count("successfully unloaded 'dllm'") == unloads:
            assert time.monotonic() < end, "the model did not unload:\n" + server.log()[-3000:]
            time.sleep(0.2)
        assert not client.is_model_ready("dllm")
        client.load_model("dllm")  # returns once loaded
        assert client.is_model_ready("dllm")
    finally:
        client.close()
    res = grpc_generate(server.grpc_url, "12+34=", SAMPLING, stream=True)
    assert res.error is None and res.text == expected("12+34=", **SAMPLING)
