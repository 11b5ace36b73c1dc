"""Issue 22: each family's official decoder as the oracle, and the engine serving it.

Random tiny models in float64 (MHA and GQA), many seeds: every rule (LLaDA's remasking, Dream's
alg with and without alg_temp) x temperature 0 / 0.7 x no filter / top_p / top_k x steps = length
and fewer x block sizes. Engine tokens with cache="none" (a Refresh every step) == the oracle's;
the row rules on identical logits agree; the dual cache keeps the same rules and stays batch-invariant.
"""

from __future__ import annotations

import dataclasses
import itertools
import random

import pytest
import torch

from backend.engine.config import EngineConfig
from backend.engine.denoise import dream_schedule, origin_transfer_probability, select_commits
from backend.engine.engine import Engine
from backend.engine.runner.sampling import pick_tokens
from backend.engine.sampling_params import SamplingParams
from backend.models import random_model
from backend.oracle.common import dream_rows, llada_rows
from backend.oracle.reference import generate
from tests.conftest import random_ids

MiB = 1 << 20
RULES = {"llada": [{"remasking": "low_confidence"}, {"remasking": "random"}],
         "dream": [{"alg": a} for a in ("origin", "maskgit_plus", "topk_margin", "entropy")]
         + [{"alg": "maskgit_plus", "alg_temp": 0.5}, {"alg": "entropy", "alg_temp": 2.0}]}
FILTERS = [{}, {"top_p": 0.9}, {"top_k": 5}, {"top_p": 0.5, "top_k": 3}]


def _model(name: str, seed: int, gqa: bool):
    overrides = {"num_kv_heads": 2 if name == "tiny-llada" else 1} if gqa else {}
    return random_model(name, dtype=torch.float64, seed=seed, **overrides)


def _matrix(arch: str, rng: random.Random) -> list[SamplingParams]:
    out = []
    for rule, temp, filt, fewer, block in itertools.product(RULES[arch], (0.0, 0.7), FILTERS, (False, True), (8, 4)):
        max_tokens = 8
        blocks = max_tokens // block
        steps = max_tokens if not fewer else blocks * rng.randint(1, block - 1)
        out.append(SamplingParams(max_tokens=max_tokens, block_length=block, steps=steps, temperature=temp,
                                  seed=rng.randrange(1000), ignore_eos=rng.random() < 0.5, **rule, **filt))
    return out


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
@pytest.mark.parametrize("seed, gqa", [(0, False), (1, True), (2, False), (3, True)])
def test_engine_without_cache_equals_official_oracle(name, seed, gqa):
    model = _model(name, seed, gqa)
    cfg = model.config
    rng = random.Random(100 * seed + len(name))
    params = [dataclass_with(p, cache="none") for p in _matrix(cfg.arch, rng)]
    gen = torch.Generator().manual_seed(seed)
    prompts = [random_ids(rng.randint(1, 12), cfg.vocab_size, gen, avoid=(cfg.mask_token_id,)).tolist()
               for _ in params]
    engine = Engine(model, EngineConfig(kv_cache_bytes=8 * MiB, max_num_seqs=256))
    results = engine.generate(prompts, params)
    for i, (prompt, p, res) in enumerate(zip(prompts, params, results, strict=True)):
        ref = generate(model, prompt, p)
        assert res.token_ids == ref.tokens, f"request {i}: {p}"
        assert res.finish_reason == ref.finish_reason, f"request {i}: {p}"


def dataclass_with(p: SamplingParams, **changes) -> SamplingParams:
    return dataclasses.replace(p, **changes)


@pytest.mark.parametrize("arch", ["llada", "dream"])
def test_row_rules_on_identical_logits(arch):
    """The engine's budgeted row function and the oracle's plain one: same tokens, same scores,
    for every rule, temperature and filter, on logits where [MASK] is sometimes the top token."""
    mask_id, vocab = 30, 37
    gen = torch.Generator().manual_seed(7)
    for k, (rule, temp, filt) in enumerate(itertools.product(RULES[arch], (0.0, 0.7, 3.0), FILTERS + [{"top_k": 1}])):
        logits = torch.randn(12, vocab, generator=gen, dtype=torch.float64) * 3
        logits[::4, mask_id] += 20  # [MASK] the favourite of some rows
        positions = torch.arange(40, 52)
        p = SamplingParams(max_tokens=8, temperature=temp, seed=k, **rule, **filt).for_family(arch)
        want_t, want_c = (llada_rows if arch == "llada" else dream_rows)(logits, positions, p, 3, mask_id)
        got_t, got_c = pick_tokens(logits, positions, temp, k, 3, mask_token_id=mask_id,
                                   alg=p.alg or p.remasking, top_p=p.top_p, top_k=p.top_k, alg_temp=p.alg_temp)
        assert got_t.tolist() == want_t.tolist(), (rule, temp, filt)
        assert mask_id not in got_t.tolist()
        torch.testing.assert_close(got_c, want_c, rtol=1e-12, atol=1e-15)


def test_llada_confidence_keeps_mask_in_the_softmax():
    """LLaDA's generate normalises over the whole vocabulary, [MASK] included (issue 22)."""
    logits = torch.tensor([[2.0, 1.0, 0.0, 5.0]], dtype=torch.float64)  # id 3 is [MASK]
    tok, conf = pick_tokens(logits, torch.tensor([9]), 0.0, 0, 0, mask_token_id=3)
    assert tok.item() == 0
    assert conf.item() == pytest.approx(torch.softmax(logits, -1)[0, 0].item(), rel=1e-14)


def test_threshold_is_inclusive_and_dream_schedule():
    """The official threshold keeps confidence >= threshold; Dream's schedule at eps=1e-3 and
    steps = length: 0 tokens, then one per step, then the rest at the end."""
    conf = torch.tensor([0.5, 0.9, 0.2, 0.9])
    assert select_commits(conf, threshold=0.9).tolist() == [1, 3]
    assert dream_schedule(8, 8, 1e-3) == [0, 1, 1, 1, 1, 1, 1, 2]
    assert sum(dream_schedule(32, 5, 0.3)) == 32
    assert origin_transfer_probability(4, 5, 1e-3) == 1.0
    assert 0 < origin_transfer_probability(0, 5, 1e-3) < 0.21


def test_family_settings_refused_by_name():
    llada = Engine(random_model("tiny-llada", dtype=torch.float64), EngineConfig(kv_cache_bytes=MiB))
    dream = Engine(random_model("tiny-dream", dtype=torch.float64), EngineConfig(kv_cache_bytes=MiB))
    for field, value in (("alg", "entropy"), ("alg_temp", 0.5), ("eps", 0.01)):
        with pytest.raises(ValueError, match=f"^{field}: a Dream setting; LLaDA models take remasking"):
            llada.make_params({field: value})
    with pytest.raises(ValueError, match="^remasking: a LLaDA setting; Dream models take alg"):
        dream.make_params({"remasking": "random"})
    assert dream.make_params({}).alg == "origin" and dream.make_params({}).eps == 1e-3
    assert dream.make_params({"threshold": 0.9}).alg == "maskgit_plus"
    assert llada.make_params({}).remasking == "low_confidence" and llada.make_params({}).alg is None
    assert llada.make_params({"top_k": 5, "top_p": 0.9}).top_k == 5
    with pytest.raises(ValueError, match="^alg: threshold decoding needs a confidence"):
        dream.make_params({"threshold": 0.9, "alg": "origin"})


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_dual_cache_same_rules_batch_invariant(name):
    """With the default dual cache, every rule runs on the cached forward: refresh_interval=1 gives
    the oracle's tokens, and the default cache gives the same tokens alone and batched."""
    model = _model(name, 5, True)
    cfg = model.config
    rng = random.Random(5)
    params = _matrix(cfg.arch, rng)[::3]
    gen = torch.Generator().manual_seed(5)
    prompts = [random_ids(rng.randint(1, 12), cfg.vocab_size, gen, avoid=(cfg.mask_token_id,)).tolist()
               for _ in params]
    every = [dataclass_with(p, refresh_interval=1) for p in params]
    engine = Engine(model, EngineConfig(kv_cache_bytes=8 * MiB, max_num_seqs=256))
    for prompt, p, res in zip(prompts, every, engine.generate(prompts, every), strict=True):
        assert res.token_ids == generate(model, prompt, p).tokens, p
    batched = Engine(model, EngineConfig(kv_cache_bytes=8 * MiB, max_num_seqs=256)).generate(prompts, params)
    for prompt, p, res in zip(prompts[:8], params[:8], batched, strict=False):
        alone = Engine(model, EngineConfig(kv_cache_bytes=8 * MiB)).generate([prompt], [p])[0]
        assert alone.token_ids == res.token_ids, p
