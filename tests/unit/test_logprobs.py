"""Log-probabilities of committed tokens (issue 23): read at the step that committed each token, from
the raw logits over every token but [MASK]; they never change the answer."""

from __future__ import annotations

import math
import random

import pytest
import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.runner.logprobs import token_logprobs
from backend.engine.sampling_params import MAX_LOGPROBS, SamplingParams
from backend.oracle.reference import generate
from tests.unit.test_engine_exactness import _prompt, _random_params

MiB = 1 << 20


def _expected(row: torch.Tensor, token: int, mask_id: int, k: int):
    """An independent float64 computation from the reference decoder's logits row."""
    x = row.double().tolist()
    others = [v for i, v in enumerate(x) if i != mask_id]
    m = max(others)
    lse = m + math.log(sum(math.exp(v - m) for v in others))
    lp = {i: v - lse for i, v in enumerate(x) if i != mask_id}
    rank = 1 + sum(1 for v in lp.values() if v > lp[token])
    top = sorted(lp.items(), key=lambda kv: -kv[1])[:k]
    return lp[token], rank, top


def test_logprobs_equal_the_reference_and_leave_tokens_unchanged(tiny64):
    """Many random requests in one batch, half asking for logprobs (k 0-5): tokens identical to the
    same batch without logprobs and to the reference decoder; every entry equals the log-softmax of
    the reference's logits at the committing step (refresh every step, so the logits are the same)."""
    rng = random.Random(3)
    mask = tiny64.config.mask_token_id
    prompts = [_prompt(rng, tiny64) for _ in range(12)]
    base = [_random_params(rng, tiny64.config.arch, refresh_interval=1) for _ in prompts]
    asked = [SamplingParams(**{**sp.to_dict(), "logprobs": rng.randint(0, 5) if i % 2 == 0 else None})
             for i, sp in enumerate(base)]
    plain = Engine(tiny64, EngineConfig(kv_cache_bytes=4 * MiB)).generate(prompts, base)
    got = Engine(tiny64, EngineConfig(kv_cache_bytes=4 * MiB)).generate(prompts, asked)
    for p, sp, a, b in zip(prompts, asked, plain, got, strict=True):
        assert b.token_ids == a.token_ids
        if sp.logprobs is None:
            assert b.logprobs is None
            continue
        ref = generate(tiny64, p, sp)
        assert b.token_ids == ref.tokens
        assert len(b.logprobs) == len(b.token_ids)
        for off, (tok, (lp, rank, top)) in enumerate(zip(b.token_ids, b.logprobs, strict=True)):
            want_lp, want_rank, want_top = _expected(ref.committed_logits[off], tok, mask, sp.logprobs)
            assert math.isfinite(lp) and lp <= 0
            assert lp == pytest.approx(want_lp, abs=1e-9)
            assert rank == want_rank
            assert len(top) == sp.logprobs
            assert [v for _, v in top] == pytest.approx([v for _, v in want_top], abs=1e-9)
            assert all(t != mask for t, _ in top)
            if sp.temperature == 0 and sp.top_k is None and sp.top_p is None:
                assert rank == 1  # greedy commits the most likely token (never [MASK])
                if top:
                    assert top[0][0] == tok and top[0][1] == pytest.approx(lp)


def test_logprobs_with_the_dual_cache_are_finite_rank_one_when_greedy(tiny64):
    """Default cache, greedy, streamed deltas: one entry per streamed token, in order; cumulative
    log-probability is their sum."""
    rng = random.Random(5)
    engine = Engine(tiny64, EngineConfig(kv_cache_bytes=4 * MiB))
    prompts = [_prompt(rng, tiny64) for _ in range(6)]
    params = [SamplingParams(max_tokens=16, block_length=8, logprobs=2) for _ in prompts]
    for res in engine.generate(prompts, params):
        assert len(res.logprobs) == len(res.token_ids)
        assert all(math.isfinite(lp) and lp <= 0 and rank == 1 for lp, rank, _ in res.logprobs)
        total = sum(lp for lp, _, _ in res.logprobs)
        assert total <= 0 and math.isfinite(total)
    assert engine.pool.allocator.num_used == 0


def test_token_logprobs_ranks_ties_and_mask():
    logits = torch.tensor([[2.0, 5.0, 2.0, 9.0], [0.0, 0.0, 0.0, 0.0]])
    out = token_logprobs(logits, torch.tensor([0, 1]), mask_token_id=3, k=3)
    assert out.rank.tolist() == [2, 1]  # ties share the better rank; [MASK] (9.0) is not counted
    assert out.top_ids[0].tolist()[0] == 1 and 3 not in out.top_ids[0].tolist()
    assert torch.allclose(out.logprob[1], torch.log(torch.tensor(1 / 3)))


def test_logprobs_parameter_bounds():
    assert SamplingParams.from_dict({"logprobs": "3"}).logprobs == 3
    assert SamplingParams.from_dict({"logprobs": None}).logprobs is None
    for bad in (-1, MAX_LOGPROBS + 1, "x", 1.5):
        with pytest.raises(ValueError, match=r"^logprobs: "):
            SamplingParams.from_dict({"logprobs": bad})
