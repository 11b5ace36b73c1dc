"""The reference decoder: schedules, threshold decoding, seeds, EOS stop, errors."""

from __future__ import annotations

import pytest
import torch

from backend.engine.denoise import dream_schedule
from backend.engine.sampling_params import SamplingParams
from backend.models import random_model
from backend.oracle.reference import generate

PROMPT = [5, 17, 3, 42, 8, 11]


def _rule(model, random=False) -> dict:
    """The family's confidence rule (remasking for LLaDA, alg for Dream: each refuses the other's)."""
    if model.config.arch == "dream":
        return {"alg": "origin" if random else "maskgit_plus"}
    return {"remasking": "random" if random else "low_confidence"}


def test_one_token_per_step_blocks_fill_in_order(tiny64):
    """LLaDA: one token per step. Dream: its timestep schedule, per block of 8 in 8 steps: 0 tokens,
    then one per step, then 2 at the last step (Dream's own schedule, issue 22)."""
    params = SamplingParams(max_tokens=24, block_length=8, steps=24, **_rule(tiny64))
    out = generate(tiny64, PROMPT, params, stop_token_ids=[])
    assert out.forwards == 24 and len(out.history) == 24
    per_step = [1] * 8 if tiny64.config.arch == "llada" else [0, 1, 1, 1, 1, 1, 1, 2]
    assert [len(h) for h in out.history] == per_step * 3
    blocks = [j // 8 for h in out.history for j in h]
    assert blocks == sorted(blocks) == [b for b in range(3) for _ in range(8)]
    assert sorted(j for h in out.history for j in h) == list(range(24))
    assert out.finish_reason == "length" and len(out.tokens) == 24
    assert tiny64.config.mask_token_id not in out.tokens


def test_fewer_steps_commit_linear_quotas(tiny64):
    out = generate(tiny64, PROMPT, SamplingParams(max_tokens=16, block_length=8, steps=6, **_rule(tiny64)),
                   stop_token_ids=[])
    per_block = [3, 3, 2] if tiny64.config.arch == "llada" else dream_schedule(8, 3, 1e-3)
    assert [len(h) for h in out.history] == per_block * 2


def test_threshold_commits_at_least_one_and_high_confidence_is_faster():
    params = SamplingParams(max_tokens=16, block_length=8, threshold=0.9)
    base = random_model("tiny-llada", dtype=torch.float64, seed=4)
    out = generate(base, PROMPT, params, stop_token_ids=[])
    assert all(len(h) >= 1 for h in out.history)
    assert sum(len(h) for h in out.history) == 16
    # Sharpen the vocabulary head: confidences approach 1, so many positions pass the threshold.
    sharp = random_model("tiny-llada", dtype=torch.float64, seed=4)
    with torch.no_grad():
        sharp.lm_head.weight.mul_(300.0)
    fast = generate(sharp, PROMPT, params, stop_token_ids=[])
    assert all(len(h) >= 1 for h in fast.history)
    assert fast.forwards < out.forwards
    assert fast.forwards >= params.num_blocks


def test_threshold_one_is_one_token_per_step(tiny64):
    """Threshold 1.0: no confidence reaches it (the official rule is >=, a probability of exactly 1
    does not occur here), so exactly the most confident position each step."""
    out = generate(tiny64, PROMPT, SamplingParams(max_tokens=8, block_length=8, threshold=1.0), stop_token_ids=[])
    assert [len(h) for h in out.history] == [1] * 8


def test_same_seed_same_output_other_seed_differs(tiny64):
    def run(seed, random=False):
        p = SamplingParams(max_tokens=16, block_length=8, temperature=1.0, seed=seed, **_rule(tiny64, random))
        return generate(tiny64, PROMPT, p, stop_token_ids=[]).tokens

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert run(1, True) == run(1, True)
    assert run(1, True) != run(1)


def test_greedy_is_deterministic_and_random_remasking_changes_order(tiny64):
    greedy = SamplingParams(max_tokens=16, block_length=8, **_rule(tiny64))
    a, b = generate(tiny64, PROMPT, greedy), generate(tiny64, PROMPT, greedy)
    assert a.tokens == b.tokens and a.history == b.history
    r = generate(tiny64, PROMPT, SamplingParams(max_tokens=16, block_length=8, **_rule(tiny64, True)),
                 stop_token_ids=[])
    assert r.history != generate(tiny64, PROMPT, greedy, stop_token_ids=[]).history


def test_eos_stops_early(tiny64):
    params = SamplingParams(max_tokens=32, block_length=8, **_rule(tiny64))
    full = generate(tiny64, PROMPT, params, stop_token_ids=[])
    assert full.forwards == 32
    # Declare a token of the first block a stop token: decoding ends once it is in the committed
    # prefix, and everything before it is what the unstopped run produced.
    stop = full.full[3]
    first = full.full.index(stop)
    out = generate(tiny64, PROMPT, params, stop_token_ids=[stop])
    assert out.finish_reason == "eos"
    assert out.tokens == full.full[:first]
    assert out.forwards <= 8 < full.forwards
    ignored = generate(tiny64, PROMPT, SamplingParams(max_tokens=32, block_length=8, ignore_eos=True,
                                                      **_rule(tiny64)),
                       stop_token_ids=[stop])
    assert ignored.tokens == full.tokens and ignored.finish_reason == "length"


def test_errors(tiny64):
    with pytest.raises(ValueError, match="prompt"):
        generate(tiny64, [], SamplingParams(max_tokens=8))
    with pytest.raises(ValueError, match="max_tokens"):
        generate(tiny64, [1] * 500, SamplingParams(max_tokens=32))
