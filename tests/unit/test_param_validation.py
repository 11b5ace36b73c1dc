"""Validation is total: any JSON value (or string, as Triton request parameters arrive) for any key gives
valid SamplingParams or a ValueError whose message starts with the field's name; never another
exception. Property-based (hypothesis), plus the cases that once took the server down."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.engine.config import EngineConfig
from backend.engine.param_parsing import MAX_INT32, MAX_INT64, MAX_JSON_DEPTH, parse_json_object
from backend.engine.sampling_params import (
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_TEMPERATURE,
    MIN_SPARSE_RETENTION,
    SamplingParams,
)

FIELDS = sorted(SamplingParams._CONVERTERS)
EDGE_NUMBERS = [0, 1, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63), 10**4000, 1e30, 1e308,
                -1e308, 5e-324, 0.5, 1.0, 1.5, float("inf"), float("-inf"), float("nan")]
EDGE_STRINGS = ["", " ", "8", " 16 ", "0.5", "1e999", "-1e999", "nan", "NaN", "Infinity", "-Infinity", "inf",
                "true", "false", "null", "1_000", "\u0661\u0662", "9" * 5000, "[\"a\", \"b\"]", "[1, 2]", "[[[[",
                "low_confidence", "random", "dual", "none", "x" * 300]

json_scalars = (st.none() | st.booleans() | st.integers() | st.sampled_from(EDGE_NUMBERS)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | st.sampled_from(EDGE_STRINGS))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=12)
keys = st.sampled_from(FIELDS) | st.text(max_size=8)


def assert_valid(p: SamplingParams) -> None:
    """What the engine may rely on: types, ranges, finiteness, consistency."""
    for name in ("max_tokens", "block_length", "steps", "refresh_interval"):
        v = getattr(p, name)
        assert v is None or (type(v) is int and 1 <= v <= MAX_INT32), (name, v)
    assert type(p.seed) is int and 0 <= p.seed <= MAX_INT64
    assert type(p.temperature) is float and 0.0 <= p.temperature <= MAX_TEMPERATURE
    assert p.threshold is None or (type(p.threshold) is float and 0.0 < p.threshold <= 1.0)
    assert type(p.sparse_retention) is float and 0.0 < p.sparse_retention <= 1.0
    assert all(math.isfinite(x) for x in (p.temperature, p.sparse_retention, p.threshold or 0.5))
    assert p.max_tokens % p.block_length == 0
    assert (p.steps is None) != (p.threshold is None)
    if p.steps is not None:
        assert p.steps % p.num_blocks == 0 and p.steps_per_block <= p.block_length
    assert isinstance(p.stop, list) and len(p.stop) <= MAX_STOP_STRINGS
    assert all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in p.stop)
    # remasking / alg / eps unset (None) take the model family's official default (for_family).
    assert p.remasking in (None, "low_confidence", "random") and p.cache in ("none", "dual")
    assert p.alg in (None, "origin", "maskgit_plus", "topk_margin", "entropy")
    for name, lo, hi in (("alg_temp", 0.0, MAX_TEMPERATURE), ("eps", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        v = getattr(p, name)
        assert v is None or (type(v) is float and math.isfinite(v) and lo <= v <= hi), (name, v)
    assert p.top_k is None or (type(p.top_k) is int and 1 <= p.top_k <= MAX_INT32)
    for arch in ("llada", "dream"):
        try:
            q = p.for_family(arch)
        except ValueError as e:
            assert str(e).split(":")[0] in ("remasking", "alg", "alg_temp", "eps"), str(e)
            continue
        assert (q.remasking is None) == (arch == "dream") and (q.alg is None) == (arch == "llada")
    assert type(p.ignore_eos) is bool


def check(values: dict, defaults: dict | None = None) -> None:
    try:
        p = SamplingParams.from_dict(values, defaults)
    except ValueError as e:
        message = str(e)
        named = [k for k in (*FIELDS, *map(str, values), "sampling_parameters") if message.startswith(f"{k}: ")]
        assert named or message[0] in "'\"", message  # an unknown key that is no identifier: its repr
        return
    assert_valid(p)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(keys, json_values, max_size=6))
def test_any_json_object_gives_valid_params_or_a_named_error(values):
    check(values)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6))
def test_any_values_as_strings(values):
    # Triton request parameters arrive as strings: every value, JSON-encoded or str()-ed.
    check({k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()})
    check({k: str(v) for k, v in values.items()})


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4),
       st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=4))
def test_defaults_are_validated_too(values, defaults):
    check(values, defaults)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | json_values.map(json.dumps))
def test_any_text_as_a_json_object(text):
    try:
        value = parse_json_object("sampling_parameters", text, 64 * 1024)
    except ValueError as e:
        assert str(e).startswith("sampling_parameters: ")
        return
    assert isinstance(value, dict)
    check(value)


@pytest.mark.parametrize("text, message", [
    ('{"temperature": Infinity, "max_tokens": 16}', "^temperature: must be a finite number"),
    ('{"temperature": NaN}', "^temperature: must be a finite number"),
    ('{"temperature": 1e400}', "^temperature: must be a finite number"),
    ('{"temperature": 1000}', "^temperature: must be <= 100"),
    ('{"seed": 9223372036854775808}', "^seed: must be <= 9223372036854775807"),
    ('{"seed": 18446744073709551616}', "^seed: must be <= "),
    ('{"seed": 1e30}', "^seed: must be <= "),
    ('{"seed": -1}', "^seed: must be >= 0"),
    ('{"max_tokens": 1' + "0" * 5000 + "}", "^max_tokens: integer of 5001 digits is out of range"),
    ('{"max_tokens": "' + "9" * 5000 + '"}', "^max_tokens: integer of 5000 digits is out of range"),
    ('{"sparse_retention": 1e-400}', "^sparse_retention: must be in"),
    ('{"stop": ["' + "x" * 1_000_000 + '"]}', "^stop: a stop string may hold at most 256 characters"),
    ('{"stop": ' + json.dumps(["s"] * 17) + "}", "^stop: at most 16 stop strings"),
    ('{"stop": [null]}', "^stop: expected a string or a list of non-empty strings"),
    ('{"max_tokens": [[[[[[[[[[8]]]]]]]]]]}', None),
    ('{"max_tokens": ' + "[" * 100_000 + "]" * 100_000 + "}", None),
])
def test_cases_that_once_took_the_server_down(text, message):
    try:
        values = parse_json_object("sampling_parameters", text, 10 * 1024 * 1024)
    except ValueError as e:
        assert message is None and str(e) == f"sampling_parameters: JSON nested deeper than {MAX_JSON_DEPTH} levels"
        return
    with pytest.raises(ValueError, match=message or "^max_tokens: expected an integer"):
        SamplingParams.from_dict(values)


def test_null_is_the_same_as_leaving_the_key_out():
    defaults = {"max_tokens": 48, "block_length": 16, "steps": 48, "temperature": 0.5}
    nulls = {k: None for k in ("max_tokens", "temperature", "seed", "sparse_retention", "stop", "steps", "threshold")}
    assert SamplingParams.from_dict(nulls, defaults) == SamplingParams.from_dict({}, defaults)
    assert SamplingParams.from_dict(nulls) == SamplingParams()
    assert SamplingParams(max_tokens=None, seed=None) == SamplingParams()


def test_the_largest_legal_values_are_served():
    p = SamplingParams.from_dict({"seed": str(2**63 - 1), "temperature": MAX_TEMPERATURE, "max_tokens": 2**31 - 1,
                                  "block_length": 1, "steps": 2**31 - 1})
    assert (p.seed, p.max_tokens, p.steps) == (2**63 - 1, 2**31 - 1, 2**31 - 1)


@pytest.mark.parametrize("value", [1e-9, 5e-324, 0.0099, "0.001", 0, -0.5, 1.0000001])
def test_sparse_retention_below_the_floor_is_refused_by_name(value):
    """Issue 20: 1e-9 was accepted, kept one position per head and answered empty."""
    message = rf"^sparse_retention: must be in \[{MIN_SPARSE_RETENTION}, 1\]"
    with pytest.raises(ValueError, match=message):
        SamplingParams.from_dict({"sparse_retention": value})
    with pytest.raises(ValueError, match=message):
        EngineConfig(sparse_retention=value)


@pytest.mark.parametrize("value", [MIN_SPARSE_RETENTION, "0.01", 0.5, 1])
def test_sparse_retention_from_the_floor_to_one_is_accepted(value):
    assert SamplingParams.from_dict({"sparse_retention": value}).sparse_retention == float(value)
    assert EngineConfig(sparse_retention=value).sparse_retention == float(value)
