"""Conformance with the vLLM Triton backend's contract (issue 23), point by point as its public CI
suites check it (L0_additional_outputs_vllm, L0_backend_vllm/{vllm_backend, enabled_stream,
metrics_test}): each request is what a vLLM client sends, `"top_p": "1"` included, over a gRPC stream
without empty final responses, as those suites stream."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.integration.calls import GrpcStreams, grpc_inputs, metric, scrape_metrics

VLLM_SAMPLING = {"temperature": "0", "top_p": "1"}  # what every request of those suites carries
LONG = "copy abcdefghijklmnop ="  # answers 16 letters: with max_tokens 8 it ends at `length`
NOTHING = "What is 12+35?"  # the bundled model commits EOS at once


def vllm_call(url, prompt, sampling, stream=True, headers=None, **flags):
    """Responses (result, error) as the vLLM suites collect them; `sampling` goes both as the
    sampling_parameters input and as request parameters, as they send it (lists, which request
    parameters cannot carry, only in the input)."""
    got = []
    with grpcclient.InferenceServerClient(url) as client:
        client.start_stream(lambda result, error: got.append((result, error)), headers=headers)
        client.async_stream_infer("dllm", grpc_inputs(prompt, sampling, stream=stream, **flags),
                                  parameters={k: v for k, v in sampling.items() if not isinstance(v, list)})
        client.stop_stream()
    assert got
    return got


def outputs(got, name):
    return [None if r is None else r.as_numpy(name) for r, _ in got]


def strings(arr):
    return [v.decode() for v in arr]


@pytest.mark.parametrize("stream", [True, False])
def test_finish_reason_in_vllms_words(server, stream):
    got = vllm_call(server.grpc_url, LONG, {**VLLM_SAMPLING, "max_tokens": 8, "block_length": 2}, stream=stream,
                    return_finish_reason=True, return_num_output_tokens=True, return_num_input_tokens=True)
    assert all(e is None for _, e in got)
    reasons = [strings(a) for a in outputs(got, "finish_reason")]
    assert reasons[-1] == ["length"]
    assert all(r == ["None"] for r in reasons[:-1])  # vLLM sends str(None) before the end
    if stream:
        assert len(got) > 1
    counts = [int(a[0]) for a in outputs(got, "num_output_tokens")]
    assert all(c > 0 for c in counts) and sum(counts) == 8
    assert all(0 < int(a[0]) <= len(LONG) for a in outputs(got, "num_input_tokens"))


def test_eos_is_stop_and_the_detail_says_eos(server):
    got = vllm_call(server.grpc_url, NOTHING, VLLM_SAMPLING, stream=False, return_finish_reason=True,
                    return_finish_detail=True)
    assert strings(outputs(got, "finish_reason")[-1]) == ["stop"]
    assert strings(outputs(got, "finish_detail")[-1]) == ["eos"]
    got = vllm_call(server.grpc_url, "copy abcdef =", {**VLLM_SAMPLING, "max_tokens": 16, "stop": ["cd"]},
                    stream=False, return_finish_reason=True, return_finish_detail=True, exclude_input_in_output=True)
    assert strings(outputs(got, "text_output")[-1]) == ["ab"]
    assert strings(outputs(got, "finish_reason")[-1]) == ["stop"]
    assert strings(outputs(got, "finish_detail")[-1]) == ["stop_string"]


def test_extra_outputs_only_when_asked(server):
    got = vllm_call(server.grpc_url, LONG, {**VLLM_SAMPLING, "max_tokens": 8}, return_finish_reason=False,
                    return_logprobs=False, return_cumulative_logprob=False, return_num_input_tokens=False,
                    return_num_output_tokens=False)
    for name in ("finish_reason", "logprobs", "cumulative_logprob", "num_input_tokens", "num_output_tokens"):
        assert all(a is None for a in outputs(got, name)), name


def test_return_logprobs_without_logprobs_is_null(server):
    got = vllm_call(server.grpc_url, LONG, {**VLLM_SAMPLING, "max_tokens": 8}, return_logprobs=True)
    assert all(json.loads(a[0]) is None for a in outputs(got, "logprobs"))


@pytest.mark.parametrize("sampling, flags, field", [
    ({"logprobs": 2}, {}, "logprobs"),
    ({"logprobs": 0}, {}, "logprobs"),
    ({}, {"return_cumulative_logprob": True}, "return_cumulative_logprob"),
    ({"best_of": 2}, {}, "best_of"),
    ({"presence_penalty": 0.5}, {}, "presence_penalty"),
    ({"frequency_penalty": "0.1"}, {}, "frequency_penalty"),
    ({"repetition_penalty": 1.2}, {}, "repetition_penalty"),
    ({"prompt_logprobs": 1}, {}, "prompt_logprobs"),
    ({"min_tokens": 9, "max_tokens": 8}, {}, "min_tokens"),
])
def test_what_cannot_be_honoured_is_refused_by_name(server, sampling, flags, field):
    got = vllm_call(server.grpc_url, LONG, {**VLLM_SAMPLING, **sampling}, **flags)
    assert len(got) == 1 and got[0][1] is not None
    assert got[0][1].message().startswith(f"{field}: "), got[0][1].message()


def test_image_input_is_refused_by_the_model_not_triton(server):
    streams = GrpcStreams(server.grpc_url)
    try:
        image = grpcclient.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([b"\x89PNG"], dtype=np.object_))
        streams.send("img", grpc_inputs(LONG, VLLM_SAMPLING) + [image])
        error = streams.wait_all()["img"].error
    finally:
        streams.close()
    assert error is not None and error.startswith("image: "), error


def test_neutral_values_are_accepted(server):
    neutral = {**VLLM_SAMPLING, "n": "1", "best_of": 1, "presence_penalty": 0, "frequency_penalty": "0.0",
               "repetition_penalty": 1, "skip_special_tokens": "true", "min_tokens": 0,
               "include_stop_str_in_output": False, "max_tokens": 8}
    got = vllm_call(server.grpc_url, LONG, neutral, stream=False, exclude_input_in_output=True)
    plain = vllm_call(server.grpc_url, LONG, {"max_tokens": 8}, stream=False, exclude_input_in_output=True)
    assert got[0][1] is None and strings(got[0][0].as_numpy("text_output")) == strings(plain[0][0].as_numpy(
        "text_output"))


def test_min_tokens_holds_off_eos(server):
    got = vllm_call(server.grpc_url, NOTHING, {**VLLM_SAMPLING, "min_tokens": 4, "max_tokens": 8}, stream=False,
                    return_num_output_tokens=True, return_finish_reason=True)
    assert int(outputs(got, "num_output_tokens")[-1][0]) >= 4
    plain = vllm_call(server.grpc_url, NOTHING, {**VLLM_SAMPLING, "max_tokens": 8}, stream=False,
                      return_num_output_tokens=True)
    assert int(outputs(plain, "num_output_tokens")[-1][0]) == 0


def test_include_stop_str_in_output(server):
    got = vllm_call(server.grpc_url, "copy abcdef =", {"max_tokens": 16, "stop": ["cd"],
                                                        "include_stop_str_in_output": "true"},
                    stream=False, exclude_input_in_output=True)
    assert strings(got[-1][0].as_numpy("text_output")) == ["abcd"]


@pytest.mark.parametrize("stream", [False, True])
def test_n_answers_each_equal_to_its_seed_alone(server, stream):
    sampling = {"max_tokens": 16, "temperature": 1.5, "seed": 7, "n": 3}
    got = vllm_call(server.grpc_url, "reverse abcdefgh =", sampling, stream=stream, exclude_input_in_output=True,
                    return_finish_reason=True, return_num_output_tokens=True)
    assert all(e is None for _, e in got)
    texts = ["", "", ""]
    for arr in outputs(got, "text_output"):
        assert len(arr) == 3
        texts = [t + d for t, d in zip(texts, strings(arr), strict=True)]
    assert all(r != "None" for r in strings(outputs(got, "finish_reason")[-1]))
    for i, text in enumerate(texts):
        alone = vllm_call(server.grpc_url, "reverse abcdefgh =", {**sampling, "n": 1, "seed": 7 + i}, stream=False,
                          exclude_input_in_output=True)
        assert strings(alone[-1][0].as_numpy("text_output")) == [text]


def test_grpc_stream_error_with_status_code(server):
    """Triton 2.51 gives a stream error its gRPC status only when the client asks with the
    `triton_grpc_error` header (then the stream closes after the error)."""
    got = vllm_call(server.grpc_url, LONG, {"max_tokens": "many"}, headers={"triton_grpc_error": "true"})
    error = got[0][1]
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and "max_tokens: " in error.message()


def test_per_request_histograms(server):
    labels = {"model": "dllm", "version": "1"}
    before = scrape_metrics(server.metrics_port)
    vllm_call(server.grpc_url, LONG, {**VLLM_SAMPLING, "max_tokens": 8}, stream=False)
    after = scrape_metrics(server.metrics_port)
    for name in ("dllm:request_prompt_tokens", "dllm:request_generation_tokens", "dllm:request_params_n"):
        assert metric(after, f"{name}_count", **labels) - metric(before, f"{name}_count", **labels) == 1, name
    assert metric(after, "dllm:request_generation_tokens_sum", **labels) - metric(
        before, "dllm:request_generation_tokens_sum", **labels) == 8
