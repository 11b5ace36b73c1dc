"""The one attention entry point of the models: packed variable-length, bidirectional, GQA-aware.

Every layer calls `AttentionContext.attend`; the default context attends each sequence's queries to
the same sequence's new keys. Engines pass their own context to supply cached K/V for positions that
are not recomputed (Reuse steps) or to capture the new K/V (Refresh steps); a kernel over a paged
pool replaces this module's `varlen_attention` without touching the model code.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:  # FlashAttention varlen kernels (CUDA, fp16/bf16) where this torch has them.
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn

    _VARLEN_HAS_GQA = "enable_gqa" in inspect.signature(_varlen_attn).parameters
except ImportError:  # pragma: no cover - depends on the torch build
    _varlen_attn = None
    _VARLEN_HAS_GQA = False


@dataclass
class PackedBatch:
    """Rows of several sequences packed back to back, no padding.

    `seqlens` is a Python list so that slicing never needs a device sync; `positions` are the
    absolute positions of the packed rows (they need not be contiguous: a Reuse step computes
    only one block of a longer sequence).
    """

    positions: torch.Tensor  # [T] int64
    seqlens: list[int]
    cu_seqlens: torch.Tensor  # [B+1] int32

    @staticmethod
    def from_positions(positions: list[torch.Tensor] | list[list[int]], device=None) -> PackedBatch:
        parts = [torch.as_tensor(p, dtype=torch.long) for p in positions]
        seqlens = [int(p.numel()) for p in parts]
        pos = torch.cat(parts).to(device) if parts else torch.empty(0, dtype=torch.long, device=device)
        return PackedBatch(pos, seqlens, cumulative(seqlens, device))

    @staticmethod
    def contiguous(lengths: list[int], device=None) -> PackedBatch:
        """Each sequence computed in full from position 0 (Refresh steps, the reference decoder)."""
        return PackedBatch.from_positions([torch.arange(n) for n in lengths], device)

    @property
    def num_seqs(self) -> int:
        return len(self.seqlens)

    @property
    def max_seqlen(self) -> int:
        return max(self.seqlens, default=0)


def cumulative(lengths: list[int], device=None) -> torch.Tensor:
    cu = [0]
    for n in lengths:
        cu.append(cu[-1] + n)
    return torch.tensor(cu, dtype=torch.int32, device=device)


def varlen_attention(
    q: torch.Tensor,  # [Tq, Hq, D]
    k: torch.Tensor,  # [Tk, Hkv, D]
    v: torch.Tensor,  # [Tk, Hkv, D]
    seqlens_q: list[int],
    seqlens_k: list[int],
    cu_q: torch.Tensor | None = None,
    cu_k: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bidirectional attention of sequence i's queries to sequence i's keys, for every i; [Tq, Hq, D]."""
    hq, hkv = q.shape[1], k.shape[1]
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and _varlen_attn is not None:
        cu_q = cumulative(seqlens_q, q.device) if cu_q is None else cu_q
        cu_k = cumulative(seqlens_k, q.device) if cu_k is None else cu_k
        if hq != hkv and not _VARLEN_HAS_GQA:
            k, v = k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)
        kwargs = {"enable_gqa": True} if hq != hkv and _VARLEN_HAS_GQA else {}
        return _varlen_attn(q, k, v, cu_q, cu_k, max(seqlens_q), max(seqlens_k), **kwargs)
    # Portable path: one SDPA call per sequence. Each sequence is computed exactly as if it were
    # alone, which keeps outputs batch-invariant (the float64 exactness tests rely on it).
    out = torch.empty_like(q)
    qs, ks = 0, 0
    for lq, lk in zip(seqlens_q, seqlens_k, strict=True):
        qi = q[qs:qs + lq].transpose(0, 1).unsqueeze(0)
        ki = k[ks:ks + lk].transpose(0, 1).unsqueeze(0)
        vi = v[ks:ks + lk].transpose(0, 1).unsqueeze(0)
        oi = F.scaled_dot_product_attention(qi, ki, vi, enable_gqa=hq != hkv)
        out[qs:qs + lq] = oi.squeeze(0).transpose(0, 1)
        qs, ks = qs + lq, ks + lk
    return out


class AttentionContext:
    """Default context: no cache, every sequence attends only to its rows in this forward."""

    def attend(self, layer: int, q, k, v, batch: PackedBatch) -> torch.Tensor:
        return varlen_attention(q, k, v, batch.seqlens, batch.seqlens, batch.cu_seqlens, batch.cu_seqlens)
