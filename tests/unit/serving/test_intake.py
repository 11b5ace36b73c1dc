"""Request intake on the real bundled tokenizer and engine: any request gives what the engine takes or
an InvalidInput naming the field; prompts are measured before they are tokenized."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.serving.inputs import FLAG_INPUTS, InvalidInput, parse_request
from backend.serving.intake import Intake, PromptLimits
from tests.unit.test_param_validation import json_values

INPUT_NAMES = ["text_input", "sampling_parameters", *FLAG_INPUTS]
FIELDS = {*INPUT_NAMES, "parameters"}


@pytest.fixture(scope="module")
def engine():
    return Engine.from_config(EngineConfig(device="cpu", kv_cache_bytes=8 << 20))


def make_intake(engine, parse_special_tokens=False, encode=None):
    tok, cfg = engine.tokenizer, engine.model_config
    limits = PromptLimits(cfg.max_sequence_length, tok.max_token_bytes)
    encode = encode or (lambda text: tok.encode(text, parse_special_tokens=parse_special_tokens))
    return Intake(encode, engine.make_params, engine.validate, limits)


def getter(**inputs):
    return lambda name: inputs.get(name)


def text(value: str | bytes):
    return np.array([value.encode() if isinstance(value, str) else value], dtype=np.object_)


arrays = st.one_of(
    st.binary(max_size=40).map(lambda b: np.array([b], dtype=np.object_)),
    st.text(max_size=40).map(text),
    json_values.map(lambda v: text(json.dumps(v))),
    st.lists(st.binary(max_size=5), max_size=3).map(lambda bs: np.array(bs, dtype=np.object_)),
    st.booleans().map(lambda b: np.array([b])),
    st.lists(st.booleans(), max_size=3).map(np.array),
    st.integers(-3, 3).map(lambda i: np.array([i], dtype=np.int32)),
)
inputs = st.dictionaries(st.sampled_from(INPUT_NAMES), arrays, max_size=5)
parameter_keys = st.sampled_from(["max_tokens", "stream", "seed", "stop", "temperature", "top_k"])
parameters = st.one_of(st.just(""), st.text(max_size=40), json_values.map(json.dumps),
                       st.dictionaries(parameter_keys, json_values, max_size=4).map(json.dumps))


def named(message: str, extra=()) -> bool:
    return any(message.startswith(f"{f}: ") for f in (*FIELDS, *extra))


@settings(max_examples=300, deadline=None)
@given(inputs, parameters)
def test_any_request_parses_or_names_the_field(given_inputs, parameters_json):
    try:
        req = parse_request(getter(**given_inputs), parameters_json, max_prompt_bytes=1000)
    except InvalidInput as e:
        assert named(str(e)), str(e)
        return
    assert isinstance(req.prompt, str) and req.prompt and isinstance(req.sampling, dict)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=1, max_size=60), st.dictionaries(st.text(max_size=12), json_values, max_size=5))
def test_any_prompt_and_sampling_prepare_or_name_the_field(engine, prompt, sampling):
    intake = make_intake(engine)
    get = getter(text_input=text(prompt), sampling_parameters=text(json.dumps(sampling)))
    try:
        prepared = intake.prepare(get)
    except InvalidInput as e:
        assert named(str(e), [*map(str, sampling), "max_tokens", "block_length", "steps", "stop", "seed", "remasking",
                              "temperature", "threshold", "cache", "sparse_retention", "refresh_interval",
                              "ignore_eos"]) or str(e)[0] in "'\"", str(e)
        return
    assert prepared.prompt_ids and len(prepared.prompt_ids) + prepared.params.max_tokens <= 512


def test_a_10_mb_prompt_is_refused_before_tokenization(engine):
    calls = []
    intake = make_intake(engine, encode=lambda t: calls.append(t) or [])
    start = time.perf_counter()
    with pytest.raises(InvalidInput, match=r"^text_input: 10000000 bytes exceed the limit of \d+"):
        intake.prepare(getter(text_input=text(b"1" * 10_000_000)))
    assert time.perf_counter() - start < 0.5 and calls == []


def test_context_overflow_blames_the_field_that_overflows(engine):
    intake = make_intake(engine)
    ctx = engine.model_config.max_sequence_length  # one token per character
    with pytest.raises(InvalidInput, match=f"^text_input: {ctx + 88} tokens leave no room"):
        intake.prepare(getter(text_input=text("1" * (ctx + 88))))  # fits the byte bound, not the context
    with pytest.raises(InvalidInput, match=rf"^max_tokens: prompt \({ctx - 112} tokens\)"):
        intake.prepare(getter(text_input=text("1" * (ctx - 112)), sampling_parameters=text('{"max_tokens": 128}')))
    assert len(intake.prepare(getter(text_input=text("1" * (ctx - 112)),
                                     sampling_parameters=text('{"max_tokens": 64}'))).prompt_ids) == ctx - 112


def test_special_token_text_is_plain_text_unless_configured(engine):
    tok = engine.tokenizer
    plain = make_intake(engine).prepare(getter(text_input=text("1+1=<|eos|><|mdm_mask|>")))
    assert tok.eos_token_id not in plain.prompt_ids and tok.mask_token_id not in plain.prompt_ids
    assert len(plain.prompt_ids) == len("1+1=<|eos|><|mdm_mask|>")  # one token per character
    parsed = make_intake(engine, parse_special_tokens=True).prepare(getter(text_input=text("1+1=<|eos|>")))
    assert parsed.prompt_ids[-1] == tok.eos_token_id and len(parsed.prompt_ids) == 5
    with pytest.raises(InvalidInput, match="^text_input: holds the mask token"):
        make_intake(engine, parse_special_tokens=True).prepare(getter(text_input=text("1<|mdm_mask|>")))


def test_a_validation_error_that_names_no_field_is_ours(engine):
    tok, cfg = engine.tokenizer, engine.model_config

    def broken_validate(ids, params):
        raise ValueError("Overflow when unpacking long long")

    intake = Intake(tok.encode, engine.make_params, broken_validate,
                    PromptLimits(cfg.max_sequence_length, tok.max_token_bytes))
    with pytest.raises(RuntimeError, match="validation failed without naming a field"):
        intake.prepare(getter(text_input=text("1+1=")))
