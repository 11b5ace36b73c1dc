"""The runner of block-diffusion models: each request's `StepPlan` (rows to compute, rows to store,
positions to decode) in, per-request decoded (token, confidence) out; one packed forward per step.

The pool gives each request a dense index once (slot i holds position i, every layer and head), so a
step's stores and cache reads are row ranges of that index; its page table is installed then, and a
pure denoising step only sets its slot count to its cached positions (the paged attention path).
Decoding is the budgeted head with Dream's maskgit_plus rule, which is both families' (token drawn
from the tempered, filtered softmax; confidence its probability); Fast-dLLM v2's next-token rows are
decoded at temperature 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.engine.attention.block_attention import BlockPoolAttention, BlockSeq
from backend.engine.attention.pool_attention import PoolAttention
from backend.engine.block_request import BlockRequest, StepPlan
from backend.engine.kv.pool import KVPool
from backend.engine.request import Phase
from backend.engine.runner.decode_head import DecodeRows, budgeted_decode
from backend.engine.runner.sampling import ALG_CODES
from backend.engine.runner.step_inputs import HostStager
from backend.models import DiffusionLM, PackedBatch

MASKGIT_PLUS = ALG_CODES["maskgit_plus"]


@dataclass
class BlockResults:
    plan: StepPlan
    tokens: list[int]
    confidence: torch.Tensor  # [len(plan.decode)] on the CPU


class BlockRunner:
    def __init__(self, model: DiffusionLM, pool: KVPool, logit_budget_bytes: int, use_kernels: bool = False):
        self.model, self.pool = model, pool
        self.use_kernels = use_kernels  # the paged attention kernel for pure denoising steps (else its reference)
        self.logit_budget_bytes = logit_budget_bytes
        self.device = model.device
        self.stager = HostStager(self.device)
        self.last_graphed = False
        self._index: dict[str, tuple[object, np.ndarray]] = {}  # request -> (pool entry, rows [slots, Hkv])

    def _rows(self, r: BlockRequest) -> np.ndarray:
        entry = self.pool.entries.get(r.request_id)
        known = self._index.get(r.request_id)
        if entry is None or known is None or known[0] is not entry:  # new, or re-admitted after preemption
            entry, rows = self.pool.assign(r.request_id, np.arange(r.cached_slots))
            self._index[r.request_id] = (entry, np.asarray(rows))
            table, counts = self.pool.table_update(entry)  # its pages, for the paged kernel (once)
            dev = self.pool.block_tables.device
            self.pool.write_tables(torch.tensor([entry.table_row], device=dev),
                                   torch.from_numpy(table).unsqueeze(0).to(dev), torch.zeros_like(
                                       self.pool.slot_counts[entry.table_row:entry.table_row + 1]))
        return self._index[r.request_id][1]

    @staticmethod
    def _pure_denoise(r: BlockRequest, plan: StepPlan) -> bool:
        """One block over all its cache, nothing stored: the paged Reuse attention computes it."""
        return plan.lo == r.block_start and plan.store_hi == plan.lo and plan.hi - plan.lo == r.params.block_length

    @torch.inference_mode()
    def run(self, batch: list[tuple[BlockRequest, Phase]]) -> list[BlockResults]:
        for rid in [k for k in self._index if k not in self.pool.entries]:  # finished or preempted
            del self._index[rid]
        plans = {i: r.plan() for i, (r, _) in enumerate(batch)}
        # Multi-block steps first, pure denoising steps last (the paged path takes the tail).
        order = sorted(plans, key=lambda i: self._pure_denoise(batch[i][0], plans[i]))
        batch, plans = [batch[i] for i in order], [plans[i] for i in order]
        paged = [self._pure_denoise(r, plan) for (r, _), plan in zip(batch, plans, strict=True)]
        ids, positions, seqlens, src, dst, cached = [], [], [], [], [], []
        dec_hidden, dec_pos, dec_temp, dec_seed, dec_step, dec_top_p, dec_top_k = [], [], [], [], [], [], []
        offset = 0
        for (r, _), plan in zip(batch, plans, strict=True):
            rows = self._rows(r)
            n = plan.hi - plan.lo
            ids.append(np.asarray(r.tokens[plan.lo:plan.hi], dtype=np.int64))
            positions.append(np.arange(plan.lo, plan.hi, dtype=np.int64))
            seqlens.append(n)
            if plan.store_hi > plan.lo:
                src.append(np.arange(offset, offset + plan.store_hi - plan.lo, dtype=np.int64))
                dst.append(rows[plan.lo:plan.store_hi].reshape(-1))
            cached.append(None if paged[len(cached)] else rows[:plan.lo].reshape(-1).astype(np.int64))
            p = r.params
            for q in plan.decode:
                dec_hidden.append(offset + q - r.logit_shift - plan.lo)
                dec_pos.append(q)
                dec_temp.append(0.0 if plan.greedy else p.temperature)
                dec_seed.append(p.seed)
                dec_step.append(r.global_step)
                dec_top_p.append(1.0 if plan.greedy else (p.top_p or 1.0))
                dec_top_k.append(0 if plan.greedy else (p.top_k or 0))
            offset += n
        nd = len(dec_pos)
        arrays = {"ids": np.concatenate(ids), "positions": np.concatenate(positions),
                  "cu": np.cumsum([0, *seqlens], dtype=np.int32),
                  "dec_hidden": np.asarray(dec_hidden, dtype=np.int64), "dec_pos": np.asarray(dec_pos, dtype=np.int64),
                  "dec_temp": np.asarray(dec_temp, dtype=np.float64), "dec_seed": np.asarray(dec_seed, dtype=np.int64),
                  "dec_step": np.asarray(dec_step, dtype=np.int64), "dec_random": np.zeros(nd, dtype=np.bool_),
                  "dec_alg": np.full(nd, MASKGIT_PLUS, dtype=np.int64),
                  "dec_top_p": np.asarray(dec_top_p, dtype=np.float64),
                  "dec_top_k": np.asarray(dec_top_k, dtype=np.int64),
                  "dec_alg_temp": np.zeros(nd, dtype=np.float64)}
        if src:
            arrays["store_src"], arrays["store_dst"] = np.concatenate(src), np.concatenate(dst)
        for i, c in enumerate(cached):
            if not paged[i]:
                arrays[f"cached{i}"] = c
        pure = [i for i, x in enumerate(paged) if x]
        if pure:
            table_rows = [self.pool.entries[batch[i][0].request_id].table_row for i in pure]
            arrays["reuse_cu"] = np.cumsum([0, *(seqlens[i] for i in pure)], dtype=np.int32)
            arrays["reuse_table"] = np.asarray(table_rows, dtype=np.int32)
            arrays["count_rows"] = np.asarray(table_rows, dtype=np.int64)
            arrays["counts"] = np.repeat(np.asarray([[plans[i].lo] for i in pure], dtype=np.int32), self.pool.heads, 1)
        t = self.stager.send(arrays)
        seqs, start = [], 0
        for i, ((r, _), n) in enumerate(zip(batch, seqlens, strict=True)):
            if not paged[i]:
                seqs.append(BlockSeq(start, n, t[f"cached{i}"], r.params.block_length))
            start += n
        reuse = None
        if pure:
            self.pool.slot_counts[t["count_rows"]] = t["counts"]  # each one sees its cached positions
            reuse = PoolAttention.reuse_only(self.pool, t["reuse_cu"], t["reuse_table"], max(seqlens[i] for i in pure))
            reuse.use_kernel = self.use_kernels
        ctx = BlockPoolAttention(self.pool, seqs, t.get("store_src"), t.get("store_dst"),
                                 sum(seqlens[i] for i in range(len(batch)) if not paged[i]), reuse)
        hidden = self.model(t["ids"], PackedBatch(t["positions"], seqlens, t["cu"]), ctx)
        rows = DecodeRows(t["dec_hidden"], t["dec_pos"], t["dec_temp"], t["dec_seed"], t["dec_step"], t["dec_random"],
                          t["dec_alg"], t["dec_top_p"], t["dec_top_k"], t["dec_alg_temp"])
        tokens, conf, _, _ = budgeted_decode(
            hidden, self.model.lm_head, rows, self.logit_budget_bytes, self.model.config.mask_token_id,
            sampling=any(x > 0 for x in dec_temp), any_random=False, any_dream=True,
            any_filter=any(x < 1.0 for x in dec_top_p) or any(k > 0 for k in dec_top_k))
        if tokens.device.type != "cpu":
            tokens, conf = tokens.cpu(), conf.cpu()
        tokens = tokens.tolist()
        out: list[BlockResults | None] = [None] * len(order)
        s = 0
        for j, plan in zip(order, plans, strict=True):
            e = s + len(plan.decode)
            out[j] = BlockResults(plan, tokens[s:e], conf[s:e])
            s = e
        return out
