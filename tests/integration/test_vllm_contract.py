"""Conformance with the vLLM Triton backend's contract (issue 23), point by point as its public CI
suites check it (L0_additional_outputs_vllm, L0_backend_vllm/{vllm_backend, enabled_stream,
metrics_test}): each request is what a vLLM client sends, `"top_p": "1"` included, over a gRPC stream
without empty final responses, as those suites stream."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.integration.calls import GrpcStreams, grpc_inputs, metric, scrape_metrics, wait_for

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
    """vLLM's answer when `logprobs` was not asked for; the cumulative log-probability is still given."""
    got = vllm_call(server.grpc_url, LONG, {**VLLM_SAMPLING, "max_tokens": 8}, return_logprobs=True,
                    return_cumulative_logprob=True)
    assert all(json.loads(a[0]) is None for a in outputs(got, "logprobs"))
    sums = [float(a[0]) for a in outputs(got, "cumulative_logprob")]
    assert all(np.isfinite(s) and s <= 0 for s in sums) and len(set(sums)) == len(sums)


@pytest.mark.parametrize("stream", [True, False])
def test_logprobs_carry_the_tokens_of_their_response(server, stream):
    """Greedy: one entry per token behind each response (num_output_tokens of them), the committed
    token at rank 1 whose decoded_token pieces spell the text, `logprobs` alternatives besides, finite
    and <= 0; cumulative_logprob is the running sum and changes with every response."""
    got = vllm_call(server.grpc_url, LONG, {**VLLM_SAMPLING, "max_tokens": 16, "block_length": 4, "logprobs": 3},
                    stream=stream, return_logprobs=True, return_cumulative_logprob=True,
                    return_num_output_tokens=True, exclude_input_in_output=True)
    assert all(e is None for _, e in got)
    if stream:
        assert len(got) > 1
    total, prev, spelled, text = 0.0, None, "", ""
    for r, _ in got:
        entries = json.loads(r.as_numpy("logprobs")[0])
        assert len(entries) == int(r.as_numpy("num_output_tokens")[0])
        for d in entries:
            assert 3 <= len(d) <= 4  # the token and its 3 alternatives (it is one of them when greedy)
            assert all(np.isfinite(v["logprob"]) and v["logprob"] <= 0 for v in d.values())
            chosen = [v for v in d.values() if v["rank"] == 1]
            assert len(chosen) == 1
            total += chosen[0]["logprob"]
            spelled += chosen[0]["decoded_token"]
        cumulative = float(r.as_numpy("cumulative_logprob")[0])
        assert cumulative == pytest.approx(total, rel=1e-5, abs=1e-5)
        assert cumulative != prev
        prev = cumulative
        text += r.as_numpy("text_output")[0].decode()
    assert spelled == text == "abcdefghijklmnop"


def test_logprobs_for_n_answers(server):
    got = vllm_call(server.grpc_url, LONG, {"max_tokens": 8, "temperature": 1.0, "n": 2, "logprobs": 0},
                    stream=False, return_logprobs=True, return_cumulative_logprob=True)
    entries = [json.loads(s) for s in strings(outputs(got, "logprobs")[-1])]
    sums = outputs(got, "cumulative_logprob")[-1]
    assert len(entries) == 2 and len(sums) == 2
    for answer, total in zip(entries, sums, strict=True):
        assert len(answer) == 8 and all(len(d) == 1 for d in answer)
        assert float(total) == pytest.approx(sum(v["logprob"] for d in answer for v in d.values()), rel=1e-5)


@pytest.mark.parametrize("sampling, flags, field", [
    ({"logprobs": 21}, {}, "logprobs"),
    ({"logprobs": -1}, {}, "logprobs"),
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
    name = "dllm:request_params_n_count"  # observed with the others, after the final response went out

    def counted():
        now = scrape_metrics(server.metrics_port)
        return now if metric(now, name, **labels) > metric(before, name, **labels) else None

    after = wait_for(counted, 10, "the request's histograms")
    for name in ("dllm:request_prompt_tokens", "dllm:request_generation_tokens", "dllm:request_params_n",
                 "dllm:time_per_output_token_seconds"):
        assert metric(after, f"{name}_count", **labels) - metric(before, f"{name}_count", **labels) == 1, name
    assert metric(after, "dllm:request_generation_tokens_sum", **labels) - metric(
        before, "dllm:request_generation_tokens_sum", **labels) == 8
