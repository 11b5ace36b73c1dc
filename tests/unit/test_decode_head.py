"""Logit-aware activation budgeting: same answers as full logits, no allocation above the budget."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from backend.engine.runner.decode_head import DecodeRows, budgeted_decode, rows_per_chunk
from backend.engine.runner.sampling import pick_tokens
from backend.models import random_model


class LargestAllocation(TorchDispatchMode):
    """Records the largest new tensor any op allocates while active (views of inputs do not count)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {a.untyped_storage().data_ptr() for a in [*args, *(kwargs or {}).values()]
                  if isinstance(a, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def _rows(n, gen, temperature):
    return DecodeRows(
        hidden_index=torch.randperm(40, generator=gen)[:n],
        positions=torch.randint(0, 500, (n,), generator=gen),
        temperature=torch.tensor([temperature * (i % 2) for i in range(n)], dtype=torch.float64),
        seed=torch.randint(0, 1000, (n,), generator=gen),
        step=torch.randint(0, 50, (n,), generator=gen),
        random_remask=torch.tensor([i % 3 == 0 for i in range(n)]),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_budgeted_equals_full_logits(dtype, temperature):
    model = random_model("tiny-llada", dtype=dtype, seed=3)
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, model.config.hidden_size, generator=gen, dtype=dtype)
    rows = _rows(23, gen, temperature)
    full = model.lm_head(hidden[rows.hidden_index])  # the unbudgeted way, for comparison only
    ref_t, ref_c = pick_tokens(full, rows.positions, rows.temperature, rows.seed, rows.step, rows.random_remask,
                               model.config.mask_token_id)
    vocab = model.config.vocab_size
    for budget in (1, vocab * 8, vocab * 8 * 5, 1 << 30):  # 1 byte = one row per chunk
        tokens, conf, chunks, _ = budgeted_decode(hidden, model.lm_head, rows, budget, model.config.mask_token_id)
        # Identical tokens; confidences up to the summation order of a different GEMM row count.
        assert torch.equal(tokens, ref_t), budget
        tol = 1e-12 if dtype == torch.float64 else 1e-5
        assert torch.allclose(conf, ref_c.to(conf.dtype), rtol=tol, atol=0), budget
        assert chunks == -(-23 // rows_per_chunk(vocab, dtype, temperature > 0, budget))
    assert budgeted_decode(hidden, model.lm_head, rows, 1, None)[2] == 23


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_no_allocation_exceeds_the_budget(temperature):
    model = random_model("tiny-llada", dtype=torch.float32, seed=3, vocab_size=4000, mask_token_id=3999,
                         eos_token_id=3998, extra_stop_token_ids=[])
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(40, model.config.hidden_size, generator=gen)
    rows = _rows(37, gen, temperature)
    budget = 4000 * 8 * 3  # three rows of the widest temporary
    with LargestAllocation() as watch:
        budgeted_decode(hidden, model.lm_head, rows, budget, 3999)
    assert 0 < watch.largest <= budget
    with LargestAllocation() as unbudgeted:
        model.lm_head(hidden[rows.hidden_index])
    assert unbudgeted.largest > budget  # the instrument does see a full projection
