"""Engine versus the reference decoder, batch invariance, EOS early stop (float64 tiny models)."""

from __future__ import annotations

import random

import pytest
import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams
from backend.models import random_model
from backend.oracle.reference import generate
from tests.conftest import random_ids

MiB = 1 << 20


def _engine(model, **kw) -> Engine:
    return Engine(model, EngineConfig(kv_cache_bytes=kw.pop("kv", 4 * MiB), **kw))


def _prompt(rng: random.Random, model, n=None) -> list[int]:
    cfg = model.config
    gen = torch.Generator().manual_seed(rng.randrange(1 << 30))
    return random_ids(n or rng.randint(1, 30), cfg.vocab_size, gen, avoid=(cfg.mask_token_id,)).tolist()


def _random_params(rng: random.Random, arch: str = "llada", **extra) -> SamplingParams:
    """(Dream models take alg, not remasking: issue 22; the full alg matrix is in test_official_decoders.)"""
    block = rng.choice([1, 2, 4, 8])
    max_tokens = block * rng.randint(1, 4)
    per_block = rng.randint(1, block)
    kind = rng.choice(["steps", "steps", "threshold"])
    if kind == "threshold":
        return SamplingParams(max_tokens=max_tokens, block_length=block, threshold=rng.choice([0.02, 0.05, 0.5]),
                              **extra)
    return SamplingParams(max_tokens=max_tokens, block_length=block, steps=per_block * (max_tokens // block),
                          temperature=rng.choice([0.0, 0.0, 0.7]), seed=rng.randrange(100),
                          **({"remasking": rng.choice(["low_confidence", "low_confidence", "random"])}
                             if arch == "llada" else {"alg": rng.choice(["origin", "maskgit_plus", "entropy"])}),
                          **extra)


def test_refresh_every_step_equals_reference(tiny64):
    """refresh_interval=1: many random prompts, lengths, block sizes, step counts, decoding modes, all
    in one batch: tokens identical to the reference decoder (temperature included, thanks to
    counter-based noise)."""
    rng = random.Random(0)
    engine = _engine(tiny64)
    prompts = [_prompt(rng, tiny64) for _ in range(24)]
    params = [_random_params(rng, tiny64.config.arch, refresh_interval=1) for _ in prompts]
    results = engine.generate(prompts, params)
    for i, (p, sp, res) in enumerate(zip(prompts, params, results, strict=True)):
        ref = generate(tiny64, p, sp)
        assert res.token_ids == ref.tokens, f"request {i}: {sp}"
        assert res.finish_reason == ref.finish_reason
        assert res.forwards == ref.forwards
    assert engine.pool.allocator.num_used == 0


def test_no_cache_equals_reference(tiny64):
    rng = random.Random(1)
    engine = _engine(tiny64)
    prompts = [_prompt(rng, tiny64) for _ in range(6)]
    params = [_random_params(rng, tiny64.config.arch, cache="none") for _ in prompts]
    for p, sp, res in zip(prompts, params, engine.generate(prompts, params), strict=True):
        assert res.token_ids == generate(tiny64, p, sp).tokens


@pytest.mark.parametrize("refresh_interval", [None, 3])
def test_batch_invariance(tiny64, refresh_interval):
    """A request's tokens are the same alone and in a batch of other lengths, phases and arrival times."""
    rng = random.Random(2)
    prompts = [_prompt(rng, tiny64, n) for n in (3, 17, 29, 8, 12, 1)]
    params = [SamplingParams(max_tokens=mt, block_length=bl, refresh_interval=refresh_interval, ignore_eos=ie)
              for mt, bl, ie in [(16, 4, True), (24, 8, True), (8, 8, False), (16, 2, True), (12, 4, True),
                                 (8, 4, True)]]
    alone = [_engine(tiny64).generate([p], [sp])[0].token_ids for p, sp in zip(prompts, params, strict=True)]

    engine = _engine(tiny64, max_num_batched_tokens=64)  # small budget: requests interleave phases
    got: dict[str, list[int]] = {}
    ids, pending = [], list(zip(prompts, params, strict=True))
    while pending or engine.has_unfinished():
        if pending and rng.random() < 0.5:  # staggered arrivals
            ids.append(engine.add_request(*pending.pop(0)))
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(out.new_token_ids)
    assert [got[i] for i in ids] == alone


def test_eos_stops_early_and_saves_forwards():
    model = random_model("tiny-llada", dtype=torch.float64, seed=9)
    prompt = [4, 8, 15, 16, 23, 42]
    sp = dict(max_tokens=32, block_length=8)
    full = _engine(model).generate([prompt], SamplingParams(**sp, ignore_eos=True))[0]
    stop = full.token_ids[2]
    model.config.extra_stop_token_ids.append(stop)
    try:
        engine = _engine(model)
        early = engine.generate([prompt], SamplingParams(**sp))[0]
        ignored = engine.generate([prompt], SamplingParams(**sp, ignore_eos=True))[0]
    finally:
        model.config.extra_stop_token_ids.remove(stop)
    assert early.finish_reason == "eos"
    assert early.token_ids == full.token_ids[:full.token_ids.index(stop)]
    assert early.forwards < ignored.forwards == full.forwards
    assert ignored.token_ids == full.token_ids


def test_default_policy_is_close_to_reference(tiny64):
    """Approximate caching is measured, not asserted equal: here it only has to run and keep shapes."""
    rng = random.Random(3)
    prompts = [_prompt(rng, tiny64) for _ in range(4)]
    sp = SamplingParams(max_tokens=16, block_length=8, ignore_eos=True)
    results = _engine(tiny64).generate(prompts, sp)
    assert all(len(r.token_ids) == 16 and r.finish_reason == "length" for r in results)
    assert all(tiny64.config.mask_token_id not in r.token_ids for r in results)
