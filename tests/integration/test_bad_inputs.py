"""Every invalid input gets INVALID_ARG naming the field, while a good request runs beside them."""

from __future__ import annotations

import json

import pytest

from tests.integration.calls import GrpcStreams, grpc_generate, grpc_inputs, http_post

# Long enough (ignore_eos: every block is computed) to still be running while the battery is sent.
GOOD = {"max_tokens": 192, "block_length": 8, "steps": 192, "ignore_eos": True}

# (case, generate-endpoint body, the field the error must name). HTTP 400 is how Triton's HTTP
# frontend reports INVALID_ARG.
HTTP_CASES = [
    ("missing text_input", {"parameters": {"max_tokens": 8}}, "text_input"),
    ("empty text_input", {"text_input": ""}, "text_input"),
    ("non-JSON sampling_parameters", {"text_input": "1+1=", "sampling_parameters": "{max_tokens: 8"},
     "sampling_parameters"),
    ("non-object sampling_parameters", {"text_input": "1+1=", "sampling_parameters": "[8]"}, "sampling_parameters"),
    ("unknown key", {"text_input": "1+1=", "parameters": {"top_a": 5}}, "top_a"),
    ("max_tokens not a number", {"text_input": "1+1=", "parameters": {"max_tokens": "many"}}, "max_tokens"),
    ("temperature not a number", {"text_input": "1+1=", "parameters": {"temperature": "hot"}}, "temperature"),
    ("zero max_tokens", {"text_input": "1+1=", "parameters": {"max_tokens": 0}}, "max_tokens"),
    ("negative max_tokens", {"text_input": "1+1=", "sampling_parameters": '{"max_tokens": -4}'}, "max_tokens"),
    ("block_length not dividing max_tokens", {"text_input": "1+1=", "parameters": {"max_tokens": 16,
                                                                                   "block_length": 5}},
     "block_length"),
    ("threshold zero", {"text_input": "1+1=", "parameters": {"threshold": 0}}, "threshold"),
    ("threshold above one", {"text_input": "1+1=", "parameters": {"threshold": 1.5}}, "threshold"),
    ("longer than the context", {"text_input": "1+1=", "parameters": {"max_tokens": 100000, "block_length": 32,
                                                                      "steps": 100000}}, "max_tokens"),
    ("stream without excluding the input", {"text_input": "1+1=", "stream": True, "exclude_input_in_output": False},
     "exclude_input_in_output"),
    ("remasking unknown", {"text_input": "1+1=", "parameters": {"remasking": "sometimes"}}, "remasking"),
    ("steps zero", {"text_input": "1+1=", "parameters": {"steps": 0}}, "steps"),
    ("negative seed", {"text_input": "1+1=", "parameters": {"seed": -1}}, "seed"),
    ("stop not a string", {"text_input": "1+1=", "sampling_parameters": '{"stop": [1, 2]}'}, "stop"),
    ("ignore_eos not a boolean", {"text_input": "1+1=", "parameters": {"ignore_eos": "perhaps"}}, "ignore_eos"),
    ("cache mode unknown", {"text_input": "1+1=", "parameters": {"cache": "sometimes"}}, "cache"),
    ("refresh_interval zero", {"text_input": "1+1=", "parameters": {"refresh_interval": 0}}, "refresh_interval"),
]


@pytest.fixture
def good_request(server):
    """A valid request that runs through the whole battery; the test checks its answer at the end."""
    streams = GrpcStreams(server.grpc_url)
    streams.send("good", grpc_inputs("copy abcdefgh =", GOOD, stream=True))
    yield streams
    streams.close()


def test_bad_inputs_get_invalid_arg_naming_the_field(server, expected, good_request):
    assert len(HTTP_CASES) >= 15
    for case, body, field in HTTP_CASES:
        status, text = http_post(server.http_url, "/v2/models/dllm/generate", body)
        assert status == 400, f"{case}: HTTP {status} {text}"
        message = json.loads(text)["error"]
        assert field in message, f"{case}: {message!r} does not name {field!r}"
    # The same refusals on the gRPC stream (which carries the message only), plus what JSON cannot
    # carry: invalid UTF-8.
    for prompt, sampling, flags, field in [
        (b"\xff\xfe1+1=", None, {}, "text_input"),
        ("1+1=", "{not json", {}, "sampling_parameters"),
        ("1+1=", {"max_tokens": 0}, {}, "max_tokens"),
        ("1+1=", None, {"stream": True, "exclude_input_in_output": False}, "exclude_input_in_output"),
    ]:
        res = grpc_generate(server.grpc_url, prompt, sampling, **flags)
        assert res.error is not None and res.error.startswith(f"{field}:"), res.error
        assert res.finals == 1 and not res.deltas
    good = good_request.wait_all(timeout=120)["good"]
    assert good.error is None and good.text == expected("copy abcdefgh =", **GOOD)
