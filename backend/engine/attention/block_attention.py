"""The engine's attention for block-diffusion steps: each request's rows attend to its exact cached
K/V (positions [0, lo), read from the pool) and block-causally to each other; rows of finished blocks
(or prefill chunks) have their K/V stored into the pool first.

Two paths, each computing every request as if it were alone (batch invariance). A pure denoising
step (one block, bidirectional, over all its cached slots) is exactly the paged Reuse attention: those
requests come last in the packing and go through `PoolAttention`'s paged path (the Triton kernel on
CUDA, its reference elsewhere), with the slot count of each request's table row set to its cached
positions. The others (prefill chunks, a finished block's write with the next block's first step) span
several blocks: their cached slots are gathered and one masked attention runs per request.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backend.engine.attention.pool_attention import PoolAttention
from backend.engine.kv.pool import KVPool
from backend.models import AttentionContext, PackedBatch
from backend.models.block_causal import block_causal_mask, masked_attention


@dataclass
class BlockSeq:
    start: int  # first packed row
    rows: int
    cached: torch.Tensor  # [lo * Hkv] pool rows of the cached positions, position-major
    block_size: int


class BlockPoolAttention(AttentionContext):
    def __init__(self, pool: KVPool, seqs: list[BlockSeq], store_src: torch.Tensor | None,
                 store_dst: torch.Tensor | None, paged_from: int = 0, paged: PoolAttention | None = None):
        self.pool, self.seqs = pool, seqs
        self.store_src, self.store_dst = store_src, store_dst
        self.paged_from, self.paged = paged_from, paged  # rows [paged_from:] are pure denoising steps

    def attend(self, layer, q, k, v, batch: PackedBatch):
        pool = self.pool
        if self.store_src is not None:
            pool.store(layer, self.store_dst, k.index_select(0, self.store_src), v.index_select(0, self.store_src))
        out = torch.empty_like(q)
        heads, d = k.shape[1], k.shape[2]
        for s in self.seqs:
            a, b = s.start, s.start + s.rows
            pos = batch.positions[a:b]
            n = s.cached.numel() // heads
            ck = pool.k[layer].index_select(0, s.cached).view(n, heads, d).to(k.dtype)
            cv = pool.v[layer].index_select(0, s.cached).view(n, heads, d).to(v.dtype)
            allowed = torch.cat([torch.ones(s.rows, n, dtype=torch.bool, device=q.device),
                                 block_causal_mask(pos, pos, s.block_size)], dim=1)
            out[a:b] = masked_attention(q[a:b], torch.cat([ck, k[a:b]]), torch.cat([cv, v[a:b]]), allowed)
        if self.paged is not None:
            t = self.paged_from
            self.paged._paged(layer, q[t:], k[t:], v[t:], out[t:])
        return out
