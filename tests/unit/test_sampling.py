"""Sampling parameters, counter-based noise, token picking and the commit rules."""

from __future__ import annotations

import pytest
import torch

from backend.engine.denoise import contiguous_prefix, select_commits, transfer_schedule
from backend.engine.runner.sampling import STREAM_GUMBEL, pick_tokens, uniform
from backend.engine.sampling_params import SamplingParams, largest_block


@pytest.mark.parametrize("kwargs,field", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 64, "block_length": 128}, "block_length"),
    ({"max_tokens": 64, "block_length": 24}, "block_length"),
    ({"max_tokens": 64, "block_length": 32, "steps": 3}, "steps"),
    ({"max_tokens": 64, "block_length": 32, "steps": 128}, "steps"),
    ({"max_tokens": 64, "steps": 0}, "steps"),
    ({"threshold": 0.0}, "threshold"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": 0.9, "steps": 128}, "steps"),
    ({"threshold": 0.9, "remasking": "random"}, "remasking"),
    ({"temperature": -1.0}, "temperature"),
    ({"remasking": "lowest"}, "remasking"),
    ({"seed": -3}, "seed"),
    ({"cache": "prefix"}, "cache"),
    ({"sparse_retention": 0.0}, "sparse_retention"),
    ({"refresh_interval": 0}, "refresh_interval"),
])
def test_invalid_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        SamplingParams(**kwargs)


def test_defaults_and_from_dict_with_strings():
    p = SamplingParams()
    assert (p.max_tokens, p.block_length, p.steps, p.steps_per_block) == (128, 32, 128, 32)
    assert SamplingParams(max_tokens=100).block_length == 25 == largest_block(100)
    p = SamplingParams.from_dict({"max_tokens": "64", "temperature": "0.5", "ignore_eos": "true",
                                  "stop": '["a", "bc"]', "seed": 3.0})
    assert (p.max_tokens, p.temperature, p.ignore_eos, p.stop, p.seed) == (64, 0.5, True, ["a", "bc"], 3)
    assert p.steps == 64 and p.block_length == 32
    with pytest.raises(ValueError, match="^top_q: unknown"):  # (top_p is a setting now: issue 22)
        SamplingParams.from_dict({"top_q": 0.9})
    with pytest.raises(ValueError, match="^max_tokens: expected an integer"):
        SamplingParams.from_dict({"max_tokens": "many"})
    with pytest.raises(ValueError, match="^ignore_eos: expected a boolean"):
        SamplingParams.from_dict({"ignore_eos": "maybe"})
    with pytest.raises(ValueError, match="^sampling_parameters"):
        SamplingParams.from_dict(["max_tokens"])


def test_from_dict_defaults_yield_to_request():
    defaults = {"max_tokens": 48, "block_length": 16, "steps": 48}
    assert SamplingParams.from_dict({}, defaults).block_length == 16
    p = SamplingParams.from_dict({"max_tokens": 8}, defaults)
    assert (p.block_length, p.steps) == (8, 8)
    # The default block stays the cap: the largest divisor of the request's max_tokens up to it.
    for max_tokens, block in ((256, 16), (64, 16), (24, 12), (17, 1)):
        p = SamplingParams.from_dict({"max_tokens": max_tokens}, defaults)
        assert (p.block_length, p.steps) == (block, max_tokens)
    assert SamplingParams.from_dict({"max_tokens": 64, "block_length": 32}, defaults).block_length == 32
    assert SamplingParams.from_dict({"max_tokens": 64}, {"max_tokens": 48}).block_length == 32
    p = SamplingParams.from_dict({"threshold": 0.9}, defaults)
    assert p.steps is None and p.threshold == 0.9


def test_uniform_is_counter_based():
    pos = torch.tensor([3, 9, 40, 41])
    u = uniform(7, STREAM_GUMBEL, 2, pos, 1000)
    assert u.dtype == torch.float64 and bool((u > 0).all()) and bool((u < 1).all())
    assert abs(u.mean().item() - 0.5) < 0.02 and abs(u.var().item() - 1 / 12) < 0.005
    # Rows and columns do not depend on which other rows or columns are drawn.
    assert torch.equal(uniform(7, STREAM_GUMBEL, 2, pos[2:], 1000), u[2:])
    assert torch.equal(uniform(7, STREAM_GUMBEL, 2, pos, 300, col_start=500), u[:, 500:800])
    assert not torch.equal(uniform(8, STREAM_GUMBEL, 2, pos, 1000), u)
    assert not torch.equal(uniform(7, STREAM_GUMBEL, 3, pos, 1000), u)
    # Neighbouring columns are uncorrelated.
    assert abs(torch.corrcoef(torch.stack([u[:, :-1].flatten(), u[:, 1:].flatten()]))[0, 1]) < 0.05


def test_pick_tokens_rows_are_independent_and_mask_is_never_chosen():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(10, 50, generator=gen, dtype=torch.float64)
    logits[:, 7] = 100.0  # the "mask" token dominates
    pos = torch.arange(20, 30)
    for temp, remask in [(0.0, "low_confidence"), (0.8, "low_confidence"), (0.8, "random")]:
        tok, conf = pick_tokens(logits, pos, temp, 5, 1, remask, mask_token_id=7)
        assert not bool((tok == 7).any())
        tok2, conf2 = pick_tokens(logits[4:], pos[4:], temp, 5, 1, remask, mask_token_id=7)
        assert torch.equal(tok[4:], tok2) and torch.equal(conf[4:], conf2)
    tok, conf = pick_tokens(logits, pos, 0.0, 0, 0, mask_token_id=None)
    assert bool((tok == 7).all()) and bool((conf > 0.99).all())


def test_gumbel_sampling_follows_softmax():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]], dtype=torch.float64))
    counts = torch.zeros(3)
    for step in range(3000):
        tok, _ = pick_tokens(logits, torch.tensor([0]), 1.0, 11, step)
        counts[tok] += 1
    assert torch.allclose(counts / counts.sum(), torch.tensor([0.6, 0.3, 0.1]), atol=0.03)


def test_commit_rules():
    assert transfer_schedule(32, 32) == [1] * 32
    assert transfer_schedule(8, 3) == [3, 3, 2]
    conf = torch.tensor([0.2, 0.95, 0.5, 0.95, 0.99])
    assert select_commits(conf, quota=2).tolist() == [4, 1]
    assert select_commits(conf, quota=3).tolist() == [4, 1, 3]  # tie: earlier position first
    assert select_commits(conf, threshold=0.9).tolist() == [4, 1, 3]
    assert select_commits(conf, threshold=0.999).tolist() == [4]
    assert contiguous_prefix([False, False, True, False]) == 2
    assert contiguous_prefix([False, False]) == 2
