"""Model forward invariants: packing, externally supplied K/V, named sizes."""

from __future__ import annotations

import pytest
import torch

from backend.models import AttentionContext, PackedBatch, build_model, random_model, varlen_attention
from backend.models.model_config import preset
from tests.conftest import random_ids

F64_TOL = 1e-10
F32_TOL = 1e-4  # stated float32 tolerance (summation order differs between packed and single)


class ExternalKVContext(AttentionContext):
    """(Test helper) Adds externally supplied K/V (already rotated) for positions not computed in this forward.

    `cached[layer][i]` is `(k, v)` of shape [n_i, Hkv, D] for sequence i (n_i may be 0). With
    `capture=True` the new K/V of every layer are kept in `captured[layer]` as packed tensors, which
    is what a Refresh step stores into a cache.
    """

    def __init__(self, cached: list[list[tuple[torch.Tensor, torch.Tensor]]] | None = None,
                 capture: bool = False):
        self.cached = cached
        self.capture = capture
        self.captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def attend(self, layer: int, q, k, v, batch: PackedBatch) -> torch.Tensor:
        if self.capture:
            self.captured[layer] = (k, v)
        if not self.cached:
            return super().attend(layer, q, k, v, batch)
        ks, vs, lens_k, start = [], [], [], 0
        for i, n in enumerate(batch.seqlens):
            ck, cv = self.cached[layer][i]
            ks += [k[start:start + n], ck]
            vs += [v[start:start + n], cv]
            lens_k.append(n + ck.shape[0])
            start += n
        return varlen_attention(q, torch.cat(ks), torch.cat(vs), batch.seqlens, lens_k)


def _alone(model, ids):
    return model(ids, PackedBatch.contiguous([ids.numel()]))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, F64_TOL), (torch.float32, F32_TOL)])
def test_packed_equals_each_sequence_alone(tiny_name, dtype, tol):
    model = random_model(tiny_name, dtype=dtype, seed=2)
    gen = torch.Generator().manual_seed(0)
    for trial in range(3):
        lengths = torch.randint(1, 40, (4,), generator=gen).tolist()
        seqs = [random_ids(n, model.config.vocab_size, gen) for n in lengths]
        packed = model(torch.cat(seqs), PackedBatch.contiguous(lengths))
        start = 0
        for s in seqs:
            diff = (packed[start:start + s.numel()] - _alone(model, s)).abs().max().item()
            assert diff <= tol, f"trial {trial}: packed vs alone differ by {diff}"
            start += s.numel()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, F64_TOL), (torch.float32, F32_TOL)])
def test_external_kv_for_other_positions_equals_full_forward(tiny_name, dtype, tol):
    """Recompute only a block of each sequence, with the K/V of every other position supplied from a
    full forward: the block's hidden states equal the full forward's (the Reuse-step contract)."""
    model = random_model(tiny_name, dtype=dtype, seed=3)
    gen = torch.Generator().manual_seed(1)
    lengths = [37, 20, 9]
    blocks = [(8, 16), (0, 5), (4, 9)]  # [start, end) recomputed per sequence
    seqs = [random_ids(n, model.config.vocab_size, gen) for n in lengths]
    capture = ExternalKVContext(capture=True)
    full = model(torch.cat(seqs), PackedBatch.contiguous(lengths), capture)

    offsets = [0, *torch.tensor(lengths).cumsum(0).tolist()]
    cached = []
    for layer in range(model.config.num_layers):
        k_all, v_all = capture.captured[layer]
        per_seq = []
        for i, (s, e) in enumerate(blocks):
            keep = [offsets[i] + p for p in range(lengths[i]) if not s <= p < e]
            per_seq.append((k_all[keep], v_all[keep]))
        cached.append(per_seq)
    ids = torch.cat([seqs[i][s:e] for i, (s, e) in enumerate(blocks)])
    batch = PackedBatch.from_positions([torch.arange(s, e) for s, e in blocks])
    part = model(ids, batch, ExternalKVContext(cached))
    expected = torch.cat([full[offsets[i] + s:offsets[i] + e] for i, (s, e) in enumerate(blocks)])
    diff = (part - expected).abs().max().item()
    assert diff <= tol, f"external K/V forward differs by {diff}"


def test_gqa_and_bias_are_used():
    cfg = preset("tiny-dream")
    assert cfg.num_kv_heads < cfg.num_heads and cfg.qkv_bias
    model = random_model(cfg, dtype=torch.float64)
    assert model.layers[0].attn.qkv_proj.bias is not None
    kv_rows = cfg.num_heads * cfg.head_dim + 2 * cfg.num_kv_heads * cfg.head_dim
    assert model.layers[0].attn.qkv_proj.weight.shape == (kv_rows, cfg.hidden_size)


def test_dream_predicts_next_position_llada_the_same():
    llada, dream = preset("tiny-llada"), preset("tiny-dream")
    pos = torch.arange(5)
    assert build_model(llada, device="meta").hidden_rows_for(pos).tolist() == [0, 1, 2, 3, 4]
    assert build_model(dream, device="meta").hidden_rows_for(pos).tolist() == [0, 0, 1, 2, 3]


@pytest.mark.parametrize("name,billions", [("llada-8b", 8.0), ("dream-7b", 7.6)])
def test_real_sizes_have_real_parameter_counts(name, billions):
    model = build_model(preset(name), torch.bfloat16, device="meta")
    count = sum(p.numel() for p in model.parameters()) / 1e9
    assert abs(count - billions) < 0.15, count


def test_rotary_changes_with_position_only():
    """Attention scores depend on relative position: shifting every position leaves outputs unchanged
    for a single sequence only when rotary is applied consistently to q and k."""
    model = random_model("tiny-llada", dtype=torch.float64)
    ids = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    a = model(ids, PackedBatch.from_positions([torch.arange(8)]))
    b = model(ids, PackedBatch.from_positions([torch.arange(8) + 50]))
    c = model(ids, PackedBatch.from_positions([torch.tensor([0, 2, 1, 3, 4, 5, 6, 7])]))
    assert (a - b).abs().max() < 1e-10
    assert (a - c).abs().max() > 1e-6
