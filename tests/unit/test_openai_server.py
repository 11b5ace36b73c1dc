"""The OpenAI server's pure parts: a request as sampling parameters, the model's responses as choices and
chunks (n answers, finish reasons once, echo, usage), and the model's log-probability format in OpenAI's
two shapes. The server against a real Triton: tests/integration/test_openai_*.py."""

from __future__ import annotations

import json

import pytest

from openai_server.choices import Assembler, Job
from openai_server.errors import APIError
from openai_server.logprobs import chat_logprobs, completion_logprobs, merge_completion
from openai_server.protocol import ChatRequest, CompletionRequest
from openai_server.sampling import chat_sampling, completion_sampling, rename_field
from openai_server.triton import AnswerNews, TritonRequest, Update

USER = [{"role": "user", "content": "1+1="}]


def test_chat_sampling_keys_extras_and_names():
    req = ChatRequest.model_validate({"model": "dllm", "messages": USER, "max_tokens": 8, "max_completion_tokens": 4,
                                      "stop": "x", "n": 2, "seed": 3, "block_length": 4, "steps": 2})
    params, k = chat_sampling(req)
    assert params == {"block_length": 4, "steps": 2, "n": 2, "seed": 3, "max_tokens": 4, "stop": ["x"]} and k is None
    assert rename_field("max_tokens: must be >= 1, got 0", req) == "max_completion_tokens: must be >= 1, got 0"
    assert rename_field("text_input: too long", req) == "messages: too long"
    params, k = chat_sampling(ChatRequest.model_validate(
        {"model": "dllm", "messages": USER, "logprobs": True, "top_logprobs": 3}))
    assert params["logprobs"] == 3 and k == 3


@pytest.mark.parametrize(("body", "field"), [
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logit_bias": {"5": 1.0}}, "logit_bias"),
    ({"top_logprobs": 2}, "top_logprobs"),
])
def test_chat_features_without_meaning_here_are_refused_by_name(body, field):
    with pytest.raises(APIError) as e:
        chat_sampling(ChatRequest.model_validate({"model": "dllm", "messages": USER, **body}))
    assert e.value.status == 400 and e.value.param == field and e.value.message.startswith(f"{field}: ")


def test_neutral_values_of_unsupported_fields_pass():
    req = ChatRequest.model_validate({"model": "dllm", "messages": USER, "tool_choice": "none", "logit_bias": {},
                                      "response_format": {"type": "text"}, "user": "u"})
    assert chat_sampling(req) == ({}, None)


def test_completion_sampling():
    req = CompletionRequest.model_validate({"model": "dllm", "prompt": "1+1=", "logprobs": 2, "best_of": 1,
                                            "suffix": ""})
    assert completion_sampling(req) == ({"best_of": 1, "logprobs": 2}, 2)
    with pytest.raises(APIError, match="^suffix: not supported"):
        completion_sampling(CompletionRequest.model_validate({"model": "dllm", "prompt": "a", "suffix": "b"}))


def _update(*answers, final=False, prompt=3):
    return Update([AnswerNews(*a) for a in answers], prompt, final)


def test_stream_chunks_n_answers_finish_once_and_usage():
    out = Assembler(chat=True, model="dllm", logprobs_k=None, include_usage=True)
    job = Job(TritonRequest("p"), 0)
    first = [json.loads(c) for c in out.first_chunks([0, 1])]
    assert [c["choices"][0]["delta"] for c in first] == [{"role": "assistant", "content": ""}] * 2
    chunks = [json.loads(c) for c in out.chunks(job, _update(("ab", None, 2), ("", None, 0)))]
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"]) for c in chunks] == [(0, {"content": "ab"})]
    assert chunks[0]["usage"] is None
    # The model repeats a finished answer's reason on later responses: it is sent once.
    chunks = [json.loads(c) for c in out.chunks(job, _update(("", "stop", 0), ("c", None, 1)))]
    assert [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks] == [(0, "stop"), (1, None)]
    chunks = [json.loads(c) for c in out.chunks(job, _update(("", "stop", 0), ("", "length", 0), final=True))]
    assert [(c["choices"][0]["index"], c["choices"][0]["finish_reason"]) for c in chunks] == [(1, "length")]
    usage = json.loads(out.usage_chunk())
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


def test_whole_completion_with_echo_and_second_prompt_offsets():
    out = Assembler(chat=False, model="dllm", logprobs_k=None)
    jobs = [Job(TritonRequest("a="), 0, echo="a="), Job(TritonRequest("b="), 2)]
    out.record(jobs[1], _update(("y", "stop", 1), ("z", "stop", 1), prompt=2, final=True))
    out.record(jobs[0], _update(("x", None, 1), ("w", None, 1), prompt=2))
    out.record(jobs[0], _update(("", "stop", 0), ("", "length", 0), prompt=2, final=True))
    doc = json.loads(out.response())
    assert [(c["index"], c["text"], c["finish_reason"]) for c in doc["choices"]] == [
        (0, "a=x", "stop"), (1, "a=w", "length"), (2, "y", "stop"), (3, "z", "stop")]
    assert doc["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8,
                            "completion_tokens_details": None, "prompt_tokens_details": None}


def test_an_aborted_answer_is_a_503():
    out = Assembler(chat=True, model="dllm", logprobs_k=None)
    with pytest.raises(APIError) as e:
        out.record(Job(TritonRequest("p"), 0), _update(("", "abort", 0), final=True))
    assert e.value.status == 503


# The model's format (vLLM's backend): per token, the committed token first, then its k best by rank.
POSITIONS = [
    {"7": {"logprob": -0.5, "rank": 2, "decoded_token": "a"}, "3": {"logprob": -0.1, "rank": 1, "decoded_token": "b"}},
    {"9": {"logprob": -0.01, "rank": 1, "decoded_token": "é"}},
]


def test_logprobs_in_openai_shapes():
    chat = chat_logprobs(POSITIONS, k=1)
    assert [(t.token, t.logprob, [(x.token, x.logprob) for x in t.top_logprobs]) for t in chat] == [
        ("a", -0.5, [("b", -0.1)]), ("é", -0.01, [("é", -0.01)])]
    assert chat[1].bytes == list("é".encode())
    assert chat_logprobs(POSITIONS, k=0)[0].top_logprobs == []
    part = completion_logprobs(POSITIONS, k=2, offset=4)
    assert part.tokens == ["a", "é"] and part.token_logprobs == [-0.5, -0.01] and part.text_offset == [4, 5]
    assert part.top_logprobs == [{"b": -0.1, "a": -0.5}, {"é": -0.01}]
    merged = merge_completion([part, completion_logprobs(POSITIONS[:1], k=1, offset=6)])
    assert merged.tokens == ["a", "é", "a"] and merged.text_offset == [4, 5, 6]
