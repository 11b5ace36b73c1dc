"""The engine's attention context: Refresh rows store their K/V into the pool and attend to their own
sequence; Reuse rows attend to their own block plus their cached slots, read from the pool by the
paged attention kernel (CUDA) or its PyTorch reference (CPU, float64).

Which positions are cached, and where, was decided when the step's inputs were built (the pool's
index); this module only moves K/V and computes attention. Refresh requests are packed first, so the
two kinds of rows are two contiguous ranges and no gather, scatter or cat is needed.
"""

from __future__ import annotations

import torch

from backend.engine.attention.sparse_selection import select, store_selected
from backend.engine.kv.pool import KVPool
from backend.models import AttentionContext, PackedBatch, varlen_attention
from kernels.paged_attention import (
    block_m_for,
    kernel_available,
    paged_attention,
    paged_attention_reference,
    reference_plan,
)


class PoolAttention(AttentionContext):
    """Built from a step's inputs (`for_step`), or for a captured Reuse-only step (`reuse_only`)."""

    def __init__(self, pool: KVPool, *, refresh_rows: int = 0, refresh_seqlens: list[int] | None = None,
                 refresh_cu: torch.Tensor | None = None, reuse_cu: torch.Tensor | None = None,
                 reuse_table_row: torch.Tensor | None = None, max_reuse_rows: int = 0,
                 store_src: torch.Tensor | None = None, store_dst: torch.Tensor | None = None,
                 use_kernel: bool = True, sparse_groups: list | None = None,
                 sparse_positions: torch.Tensor | None = None):
        self.pool = pool
        self.refresh_rows, self.refresh_seqlens, self.refresh_cu = refresh_rows, refresh_seqlens or [], refresh_cu
        self.reuse_cu, self.reuse_table_row, self.max_reuse_rows = reuse_cu, reuse_table_row, max_reuse_rows
        self.store_src, self.store_dst = store_src, store_dst
        self.use_kernel = use_kernel
        self.sparse_groups = sparse_groups or []  # SparseGroup: Refresh requests that keep a subset
        self.sparse_positions = sparse_positions  # [layers, requests, heads, keep] what they kept, per layer
        self._plan = None  # the reference path's cache reads: the same for every layer of the step

    @classmethod
    def for_step(cls, pool: KVPool, inputs, use_kernel: bool, sparse_positions: torch.Tensor | None) -> PoolAttention:
        """The context of one eager step (`inputs`: its StepInputs); `sparse_positions` receives what
        each sparse head keeps, per layer."""
        return cls(pool, refresh_rows=inputs.refresh_rows, refresh_seqlens=inputs.refresh_seqlens,
                   refresh_cu=inputs.packed.cu_seqlens[:inputs.num_refresh + 1], reuse_cu=inputs.reuse_cu,
                   reuse_table_row=inputs.reuse_table_row, max_reuse_rows=inputs.max_reuse_rows,
                   store_src=inputs.store_src, store_dst=inputs.store_dst, use_kernel=use_kernel,
                   sparse_groups=inputs.sparse_groups, sparse_positions=sparse_positions)

    @classmethod
    def reuse_only(cls, pool: KVPool, cu: torch.Tensor, table_row: torch.Tensor, max_rows: int) -> PoolAttention:
        """A Reuse-only step over static buffers (what a CUDA graph captures)."""
        return cls(pool, reuse_cu=cu, reuse_table_row=table_row, max_reuse_rows=max_rows)

    def attend(self, layer, q, k, v, batch: PackedBatch):
        if self.store_src is not None:
            self.pool.store(layer, self.store_dst, k.index_select(0, self.store_src), v.index_select(0, self.store_src))
        for g in self.sparse_groups:  # each head chooses what it keeps from this layer's queries and keys
            kept = select(q, k, g)
            store_selected(layer, k, v, g, kept, self.pool)
            self.sparse_positions[layer, g.first:g.first + kept.shape[0], :, :g.kmax] = kept
        tr = self.refresh_rows
        if self.reuse_cu is None:
            return self._fresh(q, k, v)
        if tr == 0:
            return self._paged(layer, q, k, v)
        out = torch.empty_like(q)
        out[:tr] = self._fresh(q[:tr], k[:tr], v[:tr])
        self._paged(layer, q[tr:], k[tr:], v[tr:], out[tr:])
        return out

    def _fresh(self, q, k, v):
        lens, cu = self.refresh_seqlens, self.refresh_cu
        return varlen_attention(q, k, v, lens, lens, cu, cu)

    def _paged(self, layer, q, k, v, out=None):
        pool = self.pool
        args = (q, k, v, self.reuse_cu, pool.k[layer], pool.v[layer], self.reuse_table_row, pool.block_tables,
                pool.slot_counts, pool.page_size)
        if self.use_kernel and kernel_available(q.device, q.dtype):
            return paged_attention(*args, max_q_rows=self.max_reuse_rows, out=out,
                                   block_m=block_m_for(self.max_reuse_rows))
        if self._plan is None:
            self._plan = reference_plan(self.reuse_cu, self.reuse_table_row, pool.block_tables, pool.slot_counts,
                                        pool.page_size, q.shape[1])
        return paged_attention_reference(*args, out=out, plan=self._plan)
