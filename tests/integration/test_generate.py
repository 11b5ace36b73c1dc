"""Generation through the real server equals the in-process engine (greedy), over every protocol."""

from __future__ import annotations

import json

from tests.integration.calls import grpc_generate, http_post, sse_events

PROMPT = "12+34="
SAMPLING = {"max_tokens": 32, "block_length": 16, "steps": 32}


def test_grpc_streaming_equals_non_streaming_equals_engine(server, expected):
    want = expected(PROMPT, **SAMPLING)
    streamed = grpc_generate(server.grpc_url, PROMPT, SAMPLING, stream=True)
    whole = grpc_generate(server.grpc_url, PROMPT, SAMPLING, stream=False, exclude_input_in_output=True)
    assert streamed.error is None and whole.error is None
    assert streamed.text == whole.text == want
    assert len(whole.deltas) == 1 and whole.finals == 1  # exactly one response when not streaming
    assert streamed.finals == 1 and streamed.deltas[0] != ""  # no empty first chunk
    assert streamed.finish_reason == whole.finish_reason in ("eos", "length", "stop")
    assert sum(streamed.num_output_tokens) == whole.num_output_tokens[0]


def test_non_streaming_repeats_the_prompt_by_default(server, expected):
    res = grpc_generate(server.grpc_url, PROMPT, SAMPLING, stream=False)
    assert res.text == PROMPT + expected(PROMPT, **SAMPLING)


def test_http_generate_with_request_parameters(server, expected):
    # What curl sends: sampling parameters as request parameters, values as JSON strings or numbers.
    body = {"text_input": PROMPT, "exclude_input_in_output": True, "return_finish_reason": True,
            "parameters": {"max_tokens": "32", "block_length": 16, "steps": 32}}
    status, text = http_post(server.http_url, "/v2/models/dllm/generate", body)
    assert status == 200, text
    answer = json.loads(text)
    assert answer["text_output"] == expected(PROMPT, **SAMPLING)
    assert answer["finish_reason"] in ("eos", "length", "stop")


def test_http_generate_stream_sse(server, expected):
    body = {"text_input": PROMPT, "stream": True, "max_tokens": 32, "block_length": 16, "steps": 32}
    status, text = http_post(server.http_url, "/v2/models/dllm/generate_stream", body)
    assert status == 200, text
    events = sse_events(text)
    assert events and all("error" not in e for e in events)
    assert "".join(e["text_output"] for e in events) == expected(PROMPT, **SAMPLING)
    assert events[0]["text_output"] != ""


def test_stop_string_ends_the_answer(server, expected):
    full = expected(PROMPT, **SAMPLING)
    assert len(full) >= 2, f"the model's answer {full!r} is too short for this test"
    stop = full[1]
    res = grpc_generate(server.grpc_url, PROMPT, {**SAMPLING, "stop": [stop]}, stream=True)
    assert res.error is None
    assert (res.text, res.finish_reason) == (full[:full.index(stop)], "stop")
