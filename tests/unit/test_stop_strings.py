"""Stop strings end a request with finish_reason "stop" and cut the text before the stop string."""

from __future__ import annotations

import time

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams
from backend.models import random_model
from backend.models.tokenizer import Tokenizer
from backend.training import char_tokenizer


def test_stop_string_cuts_output(tmp_path):
    char_tokenizer.save(tmp_path)
    tok = Tokenizer(tmp_path, mask_token_id=char_tokenizer.special_ids()["mask"])
    ids = char_tokenizer.special_ids()
    model = random_model("tiny-llada", dtype=torch.float64, seed=4, vocab_size=tok.vocab_size,
                         mask_token_id=ids["mask"], eos_token_id=ids["eos"], extra_stop_token_ids=[])
    engine = Engine(model, EngineConfig(kv_cache_bytes=1 << 20), tokenizer=tok)
    prompt = tok.encode("12+34=")
    full = engine.generate([prompt], SamplingParams(max_tokens=32, block_length=8, ignore_eos=True))[0]
    text = full.text
    assert len(text) >= 12
    stop = text[9:11]
    cut = text.index(stop)
    out = engine.generate([prompt], SamplingParams(max_tokens=32, block_length=8, ignore_eos=True,
                                                   stop=[stop, "never-seen"]))[0]
    assert out.finish_reason == "stop"
    assert out.text == text[:cut]
    assert out.forwards <= full.forwards
    assert engine.pool.allocator.num_used == 0

    # A stop string whose first character occurs but which never completes: text held back while
    # it might be starting is released at the end, nothing is lost or duplicated.
    partial = engine.generate([prompt], SamplingParams(max_tokens=32, block_length=8, ignore_eos=True,
                                                       stop=[text[5] + "#"]))[0]
    assert partial.finish_reason == "length" and partial.text == text
    assert sum(partial.deltas, []) == full.token_ids


class _CharTokenizer:
    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)


def test_stop_string_before_an_eos_of_the_same_step_wins():
    from backend.engine.stop_checker import StopChecker

    eos = 99
    checker = StopChecker(_CharTokenizer(), [eos])
    params = SamplingParams(max_tokens=8, block_length=8, stop=["b"])
    # "ab" then EOS committed together: the stop string ends the text first.
    assert checker.check([0, 1, eos, 3], params, streamed=0) == (1, "stop")
    # No stop string before the EOS: EOS, even if one follows it.
    assert checker.check([0, 2, eos, 1], params, streamed=0) == (2, "eos")
    assert checker.check([0, 2, eos], SamplingParams(max_tokens=8, block_length=8), streamed=0) == (2, "eos")
    # No EOS: the possible start of a stop string is held back.
    held = SamplingParams(max_tokens=8, block_length=8, stop=["cd"])
    assert checker.check([0, 2], held, streamed=0) == (1, None)


def test_stop_ids_are_found_past_the_streamed_tokens_as_a_full_scan_finds_them():
    """Random prefixes with stop ids only past what was streamed: the first one, as a full scan sees it."""
    import random

    from backend.engine.stop_checker import StopChecker

    rng = random.Random(5)
    checker = StopChecker(None, [97, 98, 99])
    params = SamplingParams(max_tokens=8, block_length=8)
    for _ in range(300):
        streamed = rng.randrange(0, 20)
        prefix = [rng.randrange(0, 10) for _ in range(streamed)] + [rng.choice([1, 2, 97, 98, 99])
                                                                    for _ in range(rng.randrange(0, 20))]
        full = next((i for i, t in enumerate(prefix) if t in (97, 98, 99)), None)
        want = (len(prefix), None) if full is None else (full, "eos")
        assert checker.check(prefix, params, streamed) == want


def _held_naive(text: str, stop: str) -> int:
    return max((m for m in range(1, len(stop)) if text.endswith(stop[:m])), default=0)


@settings(max_examples=500, deadline=None)
@given(st.text("ab", max_size=14), st.text("ab", min_size=1, max_size=9))
def test_partial_match_is_the_longest_held_back_start(text, stop):
    from backend.engine.stop_checker import partial_match

    if stop not in text:
        assert partial_match(text, stop) == _held_naive(text, stop)


def test_stop_check_cost_is_linear_in_the_stop_strings():
    # A million-character stop string (validation refuses it; the checker must not depend on that)
    # costs a linear pass, not the quadratic hold-back that stalled every other request.
    from types import SimpleNamespace

    from backend.engine.stop_checker import StopChecker, partial_match

    checker = StopChecker(_CharTokenizer(), [99])
    params = SimpleNamespace(ignore_eos=False, stop=["a" * 999_999 + "b"])
    start = time.perf_counter()
    assert checker.check([0] * 50, params, streamed=0) == (0, None)  # "aaa...": all could start the stop
    assert partial_match("a" * 1_000_000, "a" * 999_999 + "b") == 999_999
    assert time.perf_counter() - start < 5.0
