"""The model runner: turns a scheduled batch into one packed forward and per-row (token, confidence).

It decides nothing: which requests run and in which phase comes from the scheduler; which rows get
committed is the denoiser's job. Refresh rows attend to their own sequence and store the K/V of
every position outside the block into the pool; Reuse rows attend to the pool plus their own block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backend.decode_head import DecodeRows, budgeted_decode
from backend.kv_pool import KVPool
from backend.models import AttentionContext, DiffusionLM, PackedBatch, varlen_attention
from backend.models.attention import cumulative
from backend.sequence import Phase, Request


@dataclass
class RowResults:
    """Decoded masked positions of one request in this step."""

    positions: list[int]
    tokens: list[int]
    confidence: torch.Tensor  # [n] on the CPU


class PoolAttention(AttentionContext):
    """Per layer: store Refresh K/V into the pool, read Reuse K/V from it. All indices are built once
    per step, so the per-layer work is a few whole-batch tensor ops (no per-request Python)."""

    def __init__(self, pool: KVPool | None, store_src, store_rows, gather_rows, key_index, seqlens_k):
        self.pool = pool
        self.store_src, self.store_rows = store_src, store_rows
        self.gather_rows, self.key_index, self.seqlens_k = gather_rows, key_index, seqlens_k

    def attend(self, layer, q, k, v, batch: PackedBatch):
        if self.store_rows is not None:
            src = self.store_src
            self.pool.store(layer, self.store_rows, k.index_select(0, src), v.index_select(0, src))
        if self.gather_rows is None:
            return super().attend(layer, q, k, v, batch)
        kc, vc = self.pool.gather(layer, self.gather_rows)
        k_all = torch.cat([k, kc]).index_select(0, self.key_index)
        v_all = torch.cat([v, vc]).index_select(0, self.key_index)
        return varlen_attention(q, k_all, v_all, batch.seqlens, self.seqlens_k)


class ModelRunner:
    def __init__(self, model: DiffusionLM, pool: KVPool | None, logit_budget_bytes: int):
        self.model = model
        self.pool = pool
        self.logit_budget_bytes = logit_budget_bytes
        self.device = model.device
        self.last_chunks = 0

    @torch.inference_mode()
    def run(self, batch: list[tuple[Request, Phase]]) -> list[RowResults]:
        ids, positions, seqlens = [], [], []
        store_src, store_rows, gather_rows, key_index, seqlens_k = [], [], [], [], []
        dec_hidden, dec_pos, dec_req = [], [], []
        offset = 0  # packed row offset of the current request
        n_fresh = sum((r.seq_len if ph == Phase.REFRESH else r.reuse_cost) for r, ph in batch)
        gathered = 0
        for i, (r, phase) in enumerate(batch):
            lo, hi = (0, r.seq_len) if phase == Phase.REFRESH else r.computed_range
            rows = list(range(lo, hi))
            ids += r.tokens[lo:hi]
            positions += rows
            seqlens.append(hi - lo)
            if phase == Phase.REFRESH:
                key_index += range(offset, offset + hi - lo)
                seqlens_k.append(hi - lo)
                if self.pool is not None and self.pool.allocator.holds(r.request_id):
                    # Dense cache: every position outside the rows a Reuse step recomputes.
                    blo, bhi = r.computed_range
                    kept = [p for p in rows if not blo <= p < bhi]
                    entry = self.pool.assign(r.request_id, kept)
                    store_src += [offset + p for p in kept]
                    store_rows.append(entry.rows)
            else:
                entry = self.pool.entries[r.request_id]
                key_index += range(offset, offset + hi - lo)
                key_index += range(n_fresh + gathered, n_fresh + gathered + entry.num_slots)
                gather_rows.append(entry.rows)
                gathered += entry.num_slots
                seqlens_k.append(hi - lo + entry.num_slots)
            for p in r.masked_positions():
                dec_hidden.append(offset + max(p - r.logit_shift, 0) - lo)
                dec_pos.append(p)
                dec_req.append(i)
            offset += hi - lo

        dev = self.device
        long = {"dtype": torch.long, "device": dev}
        ctx = PoolAttention(
            self.pool,
            torch.tensor(store_src, **long) if store_src else None,
            torch.cat(store_rows) if store_rows else None,
            torch.cat(gather_rows) if gather_rows else None,
            torch.tensor(key_index, **long),
            seqlens_k,
        )
        packed = PackedBatch(torch.tensor(positions, **long), seqlens, cumulative(seqlens, dev))
        hidden = self.model(torch.tensor(ids, **long), packed, ctx)

        reqs = [batch[j][0] for j in dec_req]
        rows = DecodeRows(
            hidden_index=torch.tensor(dec_hidden, **long),
            positions=torch.tensor(dec_pos, **long),
            temperature=torch.tensor([r.params.temperature for r in reqs], dtype=torch.float64, device=dev),
            seed=torch.tensor([r.params.seed for r in reqs], **long),
            step=torch.tensor([r.global_step for r in reqs], **long),
            random_remask=torch.tensor([r.params.remasking == "random" for r in reqs], dtype=torch.bool, device=dev),
        )
        tokens, conf, self.last_chunks = budgeted_decode(hidden, self.model.lm_head, rows, self.logit_budget_bytes,
                                                         self.model.config.mask_token_id)
        tokens, conf = tokens.cpu().tolist(), conf.cpu()
        results = [RowResults([], [], conf[:0]) for _ in batch]
        bounds = {}
        for j, i in enumerate(dec_req):
            bounds.setdefault(i, [j, j])[1] = j + 1
        for i, (s, e) in bounds.items():
            results[i] = RowResults(dec_pos[s:e], tokens[s:e], conf[s:e])
        return results

