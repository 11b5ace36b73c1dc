"""The fused greedy decode head: its PyTorch reference gives what `pick_tokens` gives on full logits
(greedy, low_confidence), and the Triton kernel (TRITON_INTERPRET=1 on the CPU, CUDA under
benchmarks/gpu_check.sh) gives what the reference gives: random inputs, exact ties, [MASK] as the
largest logit, vocabularies that are not a multiple of the tile, rows spread over several launches'
worth of programs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from backend.engine.runner.sampling import pick_tokens
from kernels.fused_decode_head import HeadConfig, greedy_head, greedy_head_reference, triton

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _case(rows: int, dim: int, vocab: int, dtype, seed: int, n_hidden: int = 50, integer: bool = False):
    gen = torch.Generator().manual_seed(seed)
    if integer:  # small integers: every dot product exact in float32, so ties are exact ties
        hidden = torch.randint(-3, 4, (n_hidden, dim), generator=gen).to(dtype)
        weight = torch.randint(-2, 3, (vocab, dim), generator=gen).to(dtype)
    else:
        hidden = torch.randn(n_hidden, dim, generator=gen, dtype=torch.float64).to(dtype)
        weight = (torch.randn(vocab, dim, generator=gen, dtype=torch.float64) / dim ** 0.5 * 3).to(dtype)
    index = torch.randperm(n_hidden, generator=gen)[:rows] if rows <= n_hidden else torch.randint(
        0, n_hidden, (rows,), generator=gen)
    return hidden.to(DEVICE), index.to(DEVICE), weight.to(DEVICE)


def _pick(hidden, index, weight, mask, scale=1.0):
    """What the budgeted head computes for greedy low_confidence rows: full logits, then pick_tokens."""
    logits = F.linear(hidden.index_select(0, index), weight)
    if scale != 1.0:
        logits = logits * scale
    n = index.numel()
    return pick_tokens(logits, torch.arange(n, device=hidden.device), 0.0, 0, 0, "low_confidence", mask)


def _same(got, want, tol):
    assert torch.equal(got[0].cpu(), want[0].cpu())
    assert got[1].dtype == want[1].dtype
    assert torch.allclose(got[1].cpu(), want[1].cpu(), rtol=tol, atol=tol * 1e-3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("block_v,scale,mask", [(4096, 1.0, 77), (64, 1.0, 0), (50, 0.125, 299), (7, 1.0, None)])
def test_reference_equals_pick_tokens(dtype, block_v, scale, mask):
    hidden, index, weight = _case(23, 48, 300, dtype, seed=1)
    got = greedy_head_reference(hidden, index, weight, mask, scale, block_v=block_v)
    _same(got, _pick(hidden, index, weight, mask, scale), 1e-12 if dtype == torch.float64 else 1e-5)


def test_reference_ties_and_mask_as_the_largest_logit():
    hidden, index, weight = _case(30, 16, 200, torch.float64, seed=2, integer=True)
    weight[20] = 2 * hidden[index[:4]].sum(0).sign()  # the best token of some rows, ...
    weight[150] = weight[20]  # tied across tiles: the lower id wins
    weight[120] = 5 * weight.abs().amax(0) * hidden.sign().mode(0).values  # [MASK] far ahead for most rows
    got = greedy_head_reference(hidden, index, weight, 120, block_v=32)
    want = _pick(hidden, index, weight, 120)
    _same(got, want, 1e-12)
    assert (got[0] != 120).all() and (got[0] != 150).all() and (got[0] == 20).any()
    assert (F.linear(hidden[index], weight).argmax(1) == 120).any(), "[MASK] was never the largest logit"


needs_triton = pytest.mark.skipif(triton is None, reason="triton is not installed")

CONFIGS = [HeadConfig(block_v=32, block_k=16, programs=1), HeadConfig(block_v=64, block_k=32, programs=5),
           HeadConfig(block_v=16, block_k=16, programs=1000, num_warps=2, num_stages=2)]


@needs_triton
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"v{c.block_v}-k{c.block_k}-p{c.programs}")
@pytest.mark.parametrize("rows,dim,vocab,mask",
                         [(5, 48, 300, 77), (37, 40, 97, 96), (70, 64, 129, 0), (1, 16, 33, None)])
def test_kernel_equals_reference_and_pick_tokens_float32(config, rows, dim, vocab, mask):
    hidden, index, weight = _case(rows, dim, vocab, torch.float32, seed=rows + vocab, n_hidden=64)
    got = greedy_head(hidden, index, weight, mask, config=config)
    _same(got, greedy_head_reference(hidden, index, weight, mask), 1e-5)
    _same(got, _pick(hidden, index, weight, mask), 1e-5)


@needs_triton
@pytest.mark.parametrize("config", CONFIGS[:2], ids=lambda c: f"v{c.block_v}-p{c.programs}")
def test_kernel_ties_mask_largest_and_scale(config):
    """Exact ties within and across tiles and chunks (lowest id wins), [MASK] the largest logit of most
    rows (never chosen, but in the confidence's normalisation), and LLaDA's logit scale."""
    hidden, index, weight = _case(40, 32, 250, torch.float32, seed=3, n_hidden=64, integer=True)
    weight[190] = 2 * hidden[index[:4]].sum(0).sign()  # the best token of some rows, ...
    weight[3], weight[200], weight[201] = weight[190], weight[190], weight[190]  # tied within and across tiles
    weight[130] = 5 * weight.abs().amax(0) * hidden.sign().mode(0).values.to(weight.dtype)
    for scale in (1.0, 0.25):
        got = greedy_head(hidden, index, weight, 130, scale, config=config)
        _same(got, _pick(hidden, index, weight, 130, scale), 1e-5)
        _same(got, greedy_head_reference(hidden, index, weight, 130, scale, block_v=config.block_v), 1e-5)
    assert (got[0] != 130).all() and not ({190, 200, 201} & set(got[0].tolist()))
    assert (got[0] == 3).any(), "the tie case never occurred: the test would not see a wrong tie-break"
    assert (F.linear(hidden[index], weight).argmax(1) == 130).any(), "[MASK] was never the largest logit"


@needs_triton
def test_kernel_half_rounds_logits_as_the_head_does():
    """float16 (bf16 is checked on CUDA only: the interpreter's bf16 tl.dot is wrong): the kernel rounds
    each logit to the model's dtype, as the head's product does, before picking."""
    hidden, index, weight = _case(20, 64, 300, torch.float16, seed=4, n_hidden=64)
    got = greedy_head(hidden, index, weight, 10, config=CONFIGS[1])
    _same(got, _pick(hidden, index, weight, 10), 1e-3)


@needs_triton
@pytest.mark.skipif(DEVICE == "cpu", reason="interpreter: bf16 tl.dot")
def test_kernel_bfloat16_on_cuda():
    hidden, index, weight = _case(64, 256, 5000, torch.bfloat16, seed=5, n_hidden=128)
    got = greedy_head(hidden, index, weight, 4999, scale=0.5)
    want = _pick(hidden, index, weight, 4999, 0.5)
    assert (got[0] == want[0]).float().mean() >= 0.98  # a near-tie may round apart in a different order
    same = got[0] == want[0]
    assert torch.allclose(got[1][same], want[1][same], rtol=2e-2)


@needs_triton
def test_no_rows():
    hidden, index, weight = _case(3, 16, 40, torch.float32, seed=6)
    tokens, conf = greedy_head(hidden, index[:0], weight, 5)
    assert tokens.shape == (0,) and conf.shape == (0,) and conf.dtype == torch.float32


@needs_triton
def test_engine_takes_the_fused_head_only_for_greedy_low_confidence_batches(monkeypatch):
    """The CPU engine never takes the kernel (its tokens are today's). Forced on (the interpreter; on
    CUDA it is on by default), greedy low_confidence batches go through it with the same tokens, and a
    batch holding a sampled, a random remasking or a logprobs request keeps the budgeted head."""
    import backend.engine.runner.model_runner as mr
    from backend.engine.config import EngineConfig
    from backend.engine.engine import Engine
    from backend.engine.sampling_params import SamplingParams
    from backend.models import random_model

    model = random_model("tiny-llada", dtype=torch.float32, seed=7).to(DEVICE)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19, 20]]
    greedy = SamplingParams(max_tokens=16, block_length=8, ignore_eos=True)
    others = [SamplingParams(max_tokens=16, block_length=8, ignore_eos=True, **kw)
              for kw in ({"temperature": 0.8, "seed": 3}, {"remasking": "random", "seed": 4}, {"logprobs": 2})]
    plain = Engine(model, EngineConfig(kv_cache_bytes=4 << 20, max_num_seqs=4))
    assert plain.runner.fused_head is (DEVICE == "cuda")
    plain.runner.fused_head = False  # (on CUDA: the budgeted head, to compare with)
    want = [r.token_ids for r in plain.generate(prompts, greedy)]
    want_mixed = [r.token_ids for r in plain.generate(prompts, [greedy, *others[:2]])]
    want_lp = [r.token_ids for r in plain.generate(prompts[:2], [greedy, others[2]])]

    calls = []  # (path, the step's decode rows)
    real_fused, real_budgeted = mr.fused_greedy_decode, mr.budgeted_decode
    monkeypatch.setattr(mr, "fused_greedy_decode", lambda *a: calls.append(("fused", a[2])) or real_fused(*a))
    monkeypatch.setattr(mr, "budgeted_decode",
                        lambda *a, **k: calls.append(("budgeted", a[2])) or real_budgeted(*a, **k))
    fused = Engine(model, EngineConfig(kv_cache_bytes=4 << 20, max_num_seqs=4))
    fused.runner.fused_head = True
    assert [r.token_ids for r in fused.generate(prompts, greedy)] == want
    assert {path for path, _ in calls} == {"fused"}
    calls.clear()
    assert [r.token_ids for r in fused.generate(prompts, [greedy, *others[:2]])] == want_mixed
    assert [r.token_ids for r in fused.generate(prompts[:2], [greedy, others[2]])] == want_lp
    for path, rows in calls:
        eligible = bool((rows.temperature == 0).all() and not rows.random_remask.any()) and not rows.logprob_rows
        assert (path == "fused") == eligible, (path, rows)
    assert any(path == "budgeted" for path, _ in calls)
