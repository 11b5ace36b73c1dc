"""The block-diffusion oracles (SDAR's block_diffusion_generate, Fast-dLLM v2's batch_sample) with
their exact K/V cache equal the plain decoder that recomputes everything under the block-causal mask
(float64 tiny random models), and follow their commit rules."""

from __future__ import annotations

import random

import pytest
import torch

from backend.engine.block_params import FastDLLMParams, SDARParams
from backend.models import random_model
from backend.oracle import fast_dllm_official, sdar_official
from backend.oracle.block_common import geometry
from backend.oracle.reference import generate
from tests.conftest import random_ids


@pytest.fixture(scope="module")
def sdar():
    return random_model("tiny-sdar", torch.float64, seed=7)


@pytest.fixture(scope="module")
def fast():
    return random_model("tiny-fast-dllm", torch.float64, seed=8)


def _prompt(rng, model, n=None):
    cfg = model.config
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    return random_ids(n or rng.randint(1, 20), cfg.vocab_size, g, avoid=(cfg.mask_token_id,)).tolist()


def sdar_params(rng, **kw) -> SDARParams:
    block = rng.choice([1, 2, 4, 4, 8])
    return SDARParams(max_tokens=rng.randint(1, 20), block_length=block, denoising_steps=rng.randint(1, block),
                      remasking=rng.choice(["low_confidence_dynamic", "low_confidence_static", "sequential"]),
                      temperature=rng.choice([0.0, 0.0, 0.8]), seed=rng.randrange(50),
                      top_k=rng.choice([None, 5]), **kw)


def fast_params(rng, **kw) -> FastDLLMParams:
    block = rng.choice([2, 4, 8, 8])
    sub = rng.choice([s for s in (1, 2, 4, 8) if block % s == 0])
    return FastDLLMParams(max_tokens=rng.randint(1, 24), block_length=block, sub_block_length=sub,
                          threshold=rng.choice([0.05, 0.2, 0.9]), temperature=rng.choice([0.0, 0.0, 0.8]),
                          seed=rng.randrange(50), top_p=rng.choice([None, 0.9]), **kw)


@pytest.mark.parametrize("family", ["sdar", "fast"])
def test_cached_equals_plain_recompute(family, sdar, fast):
    rng = random.Random(11)
    model, make, mod = (sdar, sdar_params, sdar_official) if family == "sdar" else (fast, fast_params,
                                                                                     fast_dllm_official)
    stops = set(model.config.stop_token_ids)
    for _ in range(12):
        prompt, p = _prompt(rng, model), make(rng, ignore_eos=rng.random() < 0.7)
        cached = mod.decode(model, prompt, p, stops, cached=True)
        plain = mod.decode(model, prompt, p, stops, cached=False)
        assert cached.tokens == plain.tokens and cached.history == plain.history, p
        assert cached.finish_reason == plain.finish_reason
        assert len(cached.full) == p.max_tokens and model.config.mask_token_id not in cached.full[:len(cached.tokens)]


def test_sdar_commit_counts_follow_the_rule(sdar):
    rng = random.Random(3)
    for _ in range(8):
        prompt, p = _prompt(rng, sdar), sdar_params(rng, ignore_eos=True)
        out = generate(sdar, prompt, p)
        quota = sdar_official.linear_quota(p.block_length, p.denoising_steps)
        first, end = geometry(len(prompt), p.max_tokens, p.block_length)
        i, block, masked = 0, None, 0
        for commits in out.history:
            b = (commits[0] + len(prompt)) // p.block_length
            if b != block:
                i, block, masked = 0, b, (b + 1) * p.block_length - max(b * p.block_length, len(prompt))
            if p.remasking == "low_confidence_dynamic":
                assert len(commits) >= min(quota[i], masked)
            else:
                assert len(commits) == min(quota[i], masked)
            i, masked = i + 1, masked - len(commits)
            assert all(first * p.block_length <= c + len(prompt) < end for c in commits)
        # cached: prefill (if a whole block of prompt), each step, and a commit per block but the last
        blocks = end // p.block_length - first
        assert out.forwards == (first > 0) + len(out.history) + blocks - 1


def test_fast_dllm_sub_blocks_in_order_and_block_starts_are_predicted(fast):
    rng = random.Random(4)
    for _ in range(8):
        prompt, p = _prompt(rng, fast), fast_params(rng, ignore_eos=True)
        out = generate(fast, prompt, p)
        plen, b = len(prompt), p.block_length
        last_sub = -1
        for commits in out.history:
            pos = [c + plen for c in commits]
            subs = {q // p.sub_block_length for q in pos}
            assert len(subs) == 1  # one sub-block per step
            sub = subs.pop()
            assert sub >= last_sub  # never back to an earlier sub-block
            last_sub = sub
            if len(pos) == 1 and pos[0] % b == 0:
                continue  # a block's first token: the previous block's next-token prediction
            assert all(q % b for q in pos)  # the first position of a block is never denoised


@pytest.mark.parametrize("family", ["sdar", "fast"])
def test_stop_token_ends_generation(family, sdar, fast):
    """A stop token committed in the prefix ends the request with the tokens before it: the same as
    the full generation cut at its first stop token."""
    rng = random.Random(5)
    model, make = (sdar, sdar_params) if family == "sdar" else (fast, fast_params)
    for _ in range(6):
        prompt, p = _prompt(rng, model), make(rng, ignore_eos=True)
        full = generate(model, prompt, p).full
        stop = full[len(full) // 2]
        p.ignore_eos = False
        out = generate(model, prompt, p, stop_token_ids=[stop])
        assert out.finish_reason == "eos" and out.tokens == full[:full.index(stop)]
