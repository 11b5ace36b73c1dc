"""The engine serving block-diffusion models (SDAR, Fast-dLLM v2) with the exact block cache: tokens
equal the official-decoding oracles (float64 tiny random models) batched, alone, under chunked
prefill, preemption and every policy; streaming, admission and errors by name."""

from __future__ import annotations

import random

import pytest
import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.models import random_model
from backend.oracle.reference import generate
from tests.conftest import random_ids

MiB = 1 << 20


@pytest.fixture(scope="module", params=["tiny-sdar", "tiny-fast-dllm"])
def model(request):
    return random_model(request.param, torch.float64, seed=9)


def _engine(model, **kw) -> Engine:
    return Engine(model, EngineConfig(kv_cache_bytes=kw.pop("kv", 4 * MiB), **kw))


def _prompt(rng, model, n=None) -> list[int]:
    cfg = model.config
    g = torch.Generator().manual_seed(rng.randrange(1 << 30))
    return random_ids(n or rng.randint(1, 40), cfg.vocab_size, g, avoid=(cfg.mask_token_id,)).tolist()


def _values(rng, arch: str) -> dict:
    v = {"max_tokens": rng.randint(1, 24), "temperature": rng.choice([0.0, 0.0, 0.9]), "seed": rng.randrange(99),
         "ignore_eos": rng.random() < 0.6}
    if arch == "sdar":
        b = rng.choice([2, 4, 4, 8])
        v |= {"block_length": b, "denoising_steps": rng.randint(1, b), "top_k": rng.choice([None, 7]),
              "remasking": rng.choice(["low_confidence_dynamic", "low_confidence_static", "sequential"])}
    else:
        b = rng.choice([4, 8, 8])
        v |= {"block_length": b, "sub_block_length": rng.choice([s for s in (1, 2, 4) if b % s == 0]),
              "threshold": rng.choice([0.05, 0.3, 0.9]), "top_p": rng.choice([None, 0.8])}
    return v


def _check(model, engine, prompts, params):
    results = engine.generate(prompts, params)
    for i, (p, sp, res) in enumerate(zip(prompts, params, results, strict=True)):
        ref = generate(model, p, sp)
        assert res.token_ids == ref.tokens, f"request {i}: {sp}"
        assert res.finish_reason == ref.finish_reason, sp
        assert sum(res.deltas, []) == res.token_ids and all(res.deltas)
    assert engine.pool.allocator.num_used == 0 and not engine.requests
    return results


@pytest.mark.parametrize("scheduler", ["phase", "fcfs", "static"])
def test_batched_equals_oracle(model, scheduler):
    rng = random.Random(0)
    engine = _engine(model, scheduler=scheduler)
    prompts = [_prompt(rng, model) for _ in range(10 if scheduler == "phase" else 6)]
    _check(model, engine, prompts, [engine.make_params(_values(rng, model.config.arch)) for _ in prompts])


def test_chunked_prefill_under_a_small_budget(model):
    """Long prompts under a 16-token budget: the prompt is prefilled in chunks of whole blocks, beside
    other requests' denoising steps; no iteration computes more than the budget."""
    rng = random.Random(1)
    engine = _engine(model, max_num_batched_tokens=16)
    prompts = [_prompt(rng, model, n) for n in (60, 3, 41, 17, 33)]
    params = [engine.make_params({**_values(rng, model.config.arch), "block_length": 4,
                                  **({"sub_block_length": 2} if model.config.arch == "fast_dllm" else {})})
              for _ in prompts]
    _check(model, engine, prompts, params)
    assert max(r.refresh_tokens + r.reuse_tokens for r in engine.iteration_log) <= 16
    assert engine.stats["iterations"] > 60 // 8  # the 60-token prompt alone took several chunks


def test_preemption_drops_and_reprefills(model):
    """Requests preempted at any moment (mid-prefill, mid-block, right after a block finished) drop their
    cache, re-prefill their prompt and finished blocks when they resume, and still produce the oracle's
    tokens."""
    rng = random.Random(2)
    engine = _engine(model, max_num_batched_tokens=24)
    prompts = [_prompt(rng, model, n) for n in (30, 25, 9, 28, 2)]
    params = [engine.make_params({**_values(rng, model.config.arch), "max_tokens": 20}) for _ in prompts]
    ids = [engine.add_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
    got: dict[str, list[int]] = {i: [] for i in ids}
    while engine.has_unfinished():
        for r in list(engine.scheduler.running):
            if rng.random() < 0.3:
                engine.scheduler.preempt(r)
        for out in engine.step():
            got[out.request_id] += out.new_token_ids
    assert engine.scheduler.num_preemptions >= 10
    for i, p, sp in zip(ids, prompts, params, strict=True):
        assert got[i] == generate(model, p, sp).tokens, sp
    assert engine.pool.allocator.num_used == 0


def test_admission_waits_for_pages(model):
    """A pool of a few pages: requests wait for pages instead of failing, and all finish exactly."""
    rng = random.Random(4)
    cfg = model.config
    page = 2 * cfg.num_layers * 16 * cfg.head_dim * 8 * cfg.num_kv_heads  # float64, one page per KV head
    engine = _engine(model, kv=page * 6)
    prompts = [_prompt(rng, model, n) for n in (30, 12, 25, 3, 20)]
    params = [engine.make_params({**_values(rng, cfg.arch), "max_tokens": 12}) for _ in prompts]
    _check(model, engine, prompts, params)
    assert max(r.requests for r in engine.iteration_log) < len(prompts)


def test_alone_equals_batched(model):
    rng = random.Random(3)
    engine = _engine(model)
    prompts = [_prompt(rng, model) for _ in range(4)]
    params = [engine.make_params(_values(rng, model.config.arch)) for _ in prompts]
    together = [r.token_ids for r in engine.generate(prompts, params)]
    alone = [_engine(model).generate([p], [sp])[0].token_ids for p, sp in zip(prompts, params, strict=True)]
    assert together == alone


@pytest.mark.parametrize("values, field", [
    ({"alg": "origin"}, "alg"), ({"steps": 4}, "steps"), ({"sparse_retention": 0.5}, "sparse_retention"),
    ({"cache": "dual"}, "cache"), ({"block_length": 10_000}, "block_length"), ({"max_tokens": 600}, "max_tokens"),
])
def test_bad_parameters_are_refused_by_name(model, values, field):
    engine = _engine(model)
    with pytest.raises(ValueError, match=f"^{field}"):
        engine.validate([1, 2, 3], engine.make_params(values))


def test_family_knobs_are_refused_on_the_other_family(model):
    engine = _engine(model)
    other = {"sub_block_length": 2} if model.config.arch == "sdar" else {"remasking": "sequential"}
    with pytest.raises(ValueError, match=f"^{next(iter(other))}"):
        engine.make_params(other)


def test_default_block_is_the_checkpoints(model):
    engine = _engine(model)
    assert engine.make_params({}).block_length == model.config.block_size


@pytest.mark.parametrize("hf_name", ["SDAR_CONFIG", "FAST_DLLM_CONFIG"])
def test_engine_from_an_official_layout_directory(tmp_path, hf_name):
    """The whole path a served checkpoint takes: config.json and safetensors with the official names,
    Engine.from_config, the checkpoint's block as the default; tokens equal the oracle on the loaded model."""
    from tests.unit import block_checkpoints

    block_checkpoints.write(tmp_path, getattr(block_checkpoints, hf_name), seed=5)
    engine = Engine.from_config(EngineConfig(model=str(tmp_path), dtype="float64", device="cpu",
                                             kv_cache_bytes=2 * MiB))
    rng = random.Random(6)
    prompts = [_prompt(rng, engine.model) for _ in range(3)]
    params = [engine.make_params({"max_tokens": 10, "ignore_eos": True}) for _ in prompts]
    assert params[0].block_length == engine.model_config.block_size
    _check(engine.model, engine, prompts, params)


@pytest.mark.parametrize("name", ["tiny-sdar", "tiny-fast-dllm"])
def test_eos_ends_the_request_early(name):
    """With a token the model does produce as its EOS (same weights, another config id), requests stop
    on it: tokens before it, finish 'eos', as the oracle; and later blocks are never computed."""
    rng = random.Random(7)
    plain = random_model(name, torch.float64, seed=9)
    prompts = [_prompt(rng, plain) for _ in range(4)]
    values = [{**_values(rng, plain.config.arch), "max_tokens": 24, "ignore_eos": True} for _ in prompts]
    engine = _engine(plain)
    full = engine.generate(prompts, [engine.make_params(v) for v in values])
    eos = full[0].token_ids[len(full[0].token_ids) // 3]
    model = random_model(name, torch.float64, seed=9, eos_token_id=eos)
    engine = _engine(model)
    params = [engine.make_params({**v, "ignore_eos": False}) for v in values]
    results = _check(model, engine, prompts, params)
    assert results[0].finish_reason == "eos" and results[0].forwards < full[0].forwards
