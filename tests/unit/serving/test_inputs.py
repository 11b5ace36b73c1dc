"""Request parsing: the vLLM-backend input convention, and a named field for every problem."""

import json

import numpy as np
import pytest

from backend.serving.inputs import InvalidInput, parse_request


def getter(**inputs):
    def get(name):
        value = inputs.get(name)
        if value is None:
            return None
        dtype = np.object_ if isinstance(value, (str, bytes)) else bool
        if isinstance(value, str):
            value = value.encode("utf-8")
        return np.array([value], dtype=dtype)
    return get


def test_defaults_follow_vllm():
    req = parse_request(getter(text_input="hi"))
    assert req.prompt == "hi" and not req.stream and not req.exclude_input_in_output and req.sampling == {}


def test_streaming_excludes_the_prompt():
    req = parse_request(getter(text_input="hi", stream=True))
    assert req.stream and req.exclude_input_in_output


def test_request_parameters_and_sampling_parameters_merge_tensor_wins():
    params = json.dumps({"max_tokens": 8, "temperature": "0.5", "stream": True, "return_finish_reason": "true"})
    req = parse_request(getter(text_input="hi", sampling_parameters=json.dumps({"max_tokens": "16", "seed": 3})),
                        params)
    assert req.sampling == {"max_tokens": "16", "temperature": "0.5", "seed": 3}
    assert req.stream and req.return_finish_reason


def test_flag_tensor_beats_request_parameter():
    req = parse_request(getter(text_input="hi", stream=False), json.dumps({"stream": True}))
    assert not req.stream


@pytest.mark.parametrize("inputs, params, field", [
    ({}, "", "text_input"),
    ({"text_input": ""}, "", "text_input"),
    ({"text_input": b"\xff\xfe"}, "", "text_input"),
    ({"text_input": "hi", "sampling_parameters": "{not json"}, "", "sampling_parameters"),
    ({"text_input": "hi", "sampling_parameters": "[1, 2]"}, "", "sampling_parameters"),
    ({"text_input": "hi", "sampling_parameters": b"\xc3"}, "", "sampling_parameters"),
    ({"text_input": "hi", "stream": True, "exclude_input_in_output": False}, "", "exclude_input_in_output"),
    ({"text_input": "hi"}, json.dumps({"stream": "maybe"}), "stream"),
    ({"text_input": "hi"}, "[]", "parameters"),
])
def test_invalid_inputs_name_the_field(inputs, params, field):
    with pytest.raises(InvalidInput) as e:
        parse_request(getter(**inputs), params)
    assert str(e.value).startswith(f"{field}: ")


def test_more_than_one_prompt_is_refused():
    def get(name):
        return np.array([b"a", b"b"], dtype=np.object_) if name == "text_input" else None
    with pytest.raises(InvalidInput, match="^text_input: expected exactly one"):
        parse_request(get)
