"""The runner of block-diffusion models: each request's `StepPlan` (rows to compute, rows to store,
positions to decode) in, per-request decoded (token, confidence) out; one packed forward per step.

The pool gives each request a dense index once (slot i holds position i, every layer and head), so a
step's stores and cache reads are row ranges of that index. Decoding is the budgeted head with
Dream's maskgit_plus rule, which is both families' (token drawn from the tempered, filtered softmax;
confidence its probability); Fast-dLLM v2's next-token rows are decoded at temperature 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.engine.attention.block_attention import BlockPoolAttention, BlockSeq
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
    def __init__(self, model: DiffusionLM, pool: KVPool, logit_budget_bytes: int):
        self.model, self.pool = model, pool
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
        for rid in [k for k in self._index if k not in self.pool.entries]:
            del self._index[rid]
        return self._index[r.request_id][1]

    @torch.inference_mode()
    def run(self, batch: list[tuple[BlockRequest, Phase]]) -> list[BlockResults]:
        plans = [r.plan() for r, _ in batch]
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
            cached.append(rows[:plan.lo].reshape(-1).astype(np.int64))
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
            arrays[f"cached{i}"] = c
        t = self.stager.send(arrays)
        seqs, start = [], 0
        for i, ((r, _), n) in enumerate(zip(batch, seqlens, strict=True)):
            seqs.append(BlockSeq(start, n, t[f"cached{i}"], r.params.block_length))
            start += n
        ctx = BlockPoolAttention(self.pool, seqs, t.get("store_src"), t.get("store_dst"))
        hidden = self.model(t["ids"], PackedBatch(t["positions"], seqlens, t["cu"]), ctx)
        rows = DecodeRows(t["dec_hidden"], t["dec_pos"], t["dec_temp"], t["dec_seed"], t["dec_step"], t["dec_random"],
                          t["dec_alg"], t["dec_top_p"], t["dec_top_k"], t["dec_alg_temp"])
        tokens, conf, _ = budgeted_decode(
            hidden, self.model.lm_head, rows, self.logit_budget_bytes, self.model.config.mask_token_id,
            sampling=any(x > 0 for x in dec_temp), any_random=False, any_dream=True,
            any_filter=any(x < 1.0 for x in dec_top_p) or any(k > 0 for k in dec_top_k))
        if tokens.device.type != "cpu":
            tokens, conf = tokens.cpu(), conf.cpu()
        tokens = tokens.tolist()
        out, s = [], 0
        for plan in plans:
            e = s + len(plan.decode)
            out.append(BlockResults(plan, tokens[s:e], conf[s:e]))
            s = e
        return out
