"""Ctrl-C stays clean after requests refused on a gRPC stream whose client then cancels it: the
model unloads, tritonserver exits, no stub process and no /dev/shm region are left behind. Each test
starts a server of its own, since stopping it is the test."""

from __future__ import annotations

import time

import numpy as np
import tritonclient.grpc as grpcclient

from tests.integration.calls import GrpcStreams, grpc_inputs
from tests.integration.server import start_server

GOOD = {"max_tokens": 64, "block_length": 8, "steps": 64, "ignore_eos": True}


def refuse_then_cancel(server, inputs: list) -> str:
    """Send one request on a stream, wait for its refusal, then cancel the stream.

    The pause before the cancel: a cancel that arrives within microseconds of the refusal's last
    write can (rarely: once in a dozen runs here) meet the same Triton 2.51 stream-state leak that a
    request Triton rejects itself always meets; that one leaks however long the client waits, so the
    pause does not hide it (the second test)."""
    streams = GrpcStreams(server.grpc_url)
    try:
        streams.send("bad", inputs)
        res = streams.wait_all(60)["bad"]
        time.sleep(0.3)
    finally:
        streams.close(cancel=True)
    assert res.error is not None
    return res.error


def test_refusals_then_cancel_then_ctrl_c(tmp_path, expected):
    server = start_server(tmp_path / "server.log")
    try:
        good = GrpcStreams(server.grpc_url)
        good.send("good", grpc_inputs("copy abcdefgh =", GOOD, stream=True))
        # No inputs at all (the model refuses it: text_input is optional in config.pbtxt for this),
        # and refusals of ours, each followed by a cancelled stream.
        assert refuse_then_cancel(server, []).startswith("text_input: missing")
        assert refuse_then_cancel(server, grpc_inputs("1+1=", {"max_tokens": 0})).startswith("max_tokens:")
        assert refuse_then_cancel(server, grpc_inputs("1+1=", '{"temperature": Infinity}')).startswith("temperature:")
        result = good.wait_all(120)["good"]
        good.close()
        assert result.error is None and result.text == expected("copy abcdefgh =", **GOOD)
    finally:
        code = server.stop_cleanly()
    assert code == 0, server.log()[-3000:]
    assert "successfully unloaded 'dllm'" in server.log()


def test_a_request_triton_rejects_itself_then_cancel_then_ctrl_c(tmp_path):
    # Triton 2.51 bug: a request its gRPC frontend rejects (here: text_input of shape [2]; also a wrong
    # datatype or an unknown input name) on a stream the client then cancels is never released, so
    # the model never unloads and tritonserver exits at its exit timeout with status 1. Nothing may be
    # left behind even then: the stub exits (or its watcher kills it) and its region is removed.
    server = start_server(tmp_path / "server.log", extra=["--exit-timeout-secs=3"])
    try:
        two = grpcclient.InferInput("text_input", [2], "BYTES")
        two.set_data_from_numpy(np.array([b"1+1=", b"2+2="], dtype=np.object_))
        assert "unexpected shape for input 'text_input'" in refuse_then_cancel(server, [two])
    finally:
        code = server.stop_cleanly()
    log = server.log()
    assert code == 0 or (code == 1 and "Exit timeout expired" in log), (code, log[-3000:])


def test_vllm_client_requests_finished_cancelled_and_refused_then_ctrl_c(tmp_path):
    """What a client written for vLLM's backend sends (every optional input, `top_p` "1", logprobs,
    n answers): one request finishes, one is cancelled mid-stream, one is refused by name; then
    Ctrl-C unloads the model and tritonserver exits 0."""
    vllm_flags = {"return_finish_reason": True, "return_logprobs": True, "return_cumulative_logprob": True,
                  "return_num_input_tokens": True, "return_num_output_tokens": True}
    sampling = {"temperature": "0", "top_p": "1", "logprobs": 2, "n": 2, "max_tokens": 64, "block_length": 8,
                "ignore_eos": True}
    server = start_server(tmp_path / "server.log")
    try:
        done = GrpcStreams(server.grpc_url)
        done.send("done", grpc_inputs("copy abcdefgh =", {**sampling, "max_tokens": 16}, stream=True, **vllm_flags))
        assert done.wait_all(120)["done"].error is None
        done.close()
        cancelled = GrpcStreams(server.grpc_url)
        cancelled.send("cancelled", grpc_inputs("copy abcdefgh =", sampling, stream=True, **vllm_flags))
        cancelled.next_event(120)  # the first delta: the request is running
        cancelled.close(cancel=True)
        assert refuse_then_cancel(server, grpc_inputs("1+1=", {**sampling, "prompt_logprobs": 1}, stream=True,
                                                      **vllm_flags)).startswith("prompt_logprobs: ")
    finally:
        code = server.stop_cleanly()
    assert code == 0, server.log()[-3000:]
    assert "successfully unloaded 'dllm'" in server.log()
