"""The model runner: a scheduled batch in, per-row (token, confidence) out, in three moves.

- `prepare` (host): packs the batch (Refresh requests first, no padding), asks the pool where each
  Refresh's K/V go, and sends every index the step needs to the device in one copy (`StepInputs`);
- `forward`: one packed forward; a pure-Reuse step replays a captured CUDA graph when one fits;
- `decode`: the budgeted head on the masked rows of each block, one device-to-host copy at the end.

It decides nothing: which requests run and in which phase comes from the scheduler; which positions
a request may cache, and whether it keeps all of them, from the request (set by the engine); which
ones a sparse head keeps, from the attention (`backend/engine/attention/sparse_selection.py`); where they live, from
the pool; which rows get committed is the denoiser's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from backend.engine.attention.pool_attention import PoolAttention
from backend.engine.attention.sparse_selection import SparseItem, plan_groups, to_group
from backend.engine.kv.pool import KVPool
from backend.engine.request import Phase, Request
from backend.engine.runner.decode_head import DecodeRows, budgeted_decode, fused_greedy_decode
from backend.engine.runner.sampling import ALG_CODES
from backend.engine.runner.step_inputs import HostStager, StepInputs
from backend.models import DiffusionLM, PackedBatch


@dataclass
class RowResults:
    """Decoded masked positions of one request in this step."""

    positions: list[int]
    tokens: list[int]
    confidence: torch.Tensor  # [n] on the CPU
    # Requests that asked for logprobs: per row, (logprob, rank, [(token id, logprob), ...] best first).
    logprobs: list[tuple[float, int, list[tuple[int, float]]]] | None = None


@dataclass
class _Packing:
    """What `prepare` gathers per phase before one staged copy."""

    store_src: list = field(default_factory=list)  # Refresh: packed rows whose K/V are stored
    store_dst: list = field(default_factory=list)  # and the pool rows they go to
    updates: list = field(default_factory=list)  # slot-table rows rebuilt: (row, table, counts)
    sparse: list = field(default_factory=list)  # SparseItem per sparse Refresh
    sparse_entries: list = field(default_factory=list)
    reuse_rows: list = field(default_factory=list)  # Reuse: rows per request
    reuse_table: list = field(default_factory=list)  # and its slot-table row


class ModelRunner:
    def __init__(self, model: DiffusionLM, pool: KVPool | None, logit_budget_bytes: int, graphs=None,
                 use_kernels: bool = True, sparse_window: int = 0):
        self.model = model
        self.pool = pool
        self.logit_budget_bytes = logit_budget_bytes
        self.device = model.device
        self.stager = HostStager(self.device)
        self.graphs = graphs  # backend.engine.runner.cuda_graphs.ReuseGraphs, or None (eager)
        self.use_kernels = use_kernels  # the paged attention kernel where it can run (else its reference)
        self.fused_head = use_kernels  # greedy low_confidence steps: the fused head kernel (else budgeted_decode)
        self.sparse_window = sparse_window  # positions next to the block that sparse heads always keep
        self.last_graphed = False  # the last forward replayed a CUDA graph

    @torch.inference_mode()
    def run(self, batch: list[tuple[Request, Phase]]) -> list[RowResults]:
        inputs = self.prepare(batch)
        return self.decode(inputs, self.forward(inputs))

    # --- prepare ------------------------------------------------------------------------------
    def prepare(self, batch: list[tuple[Request, Phase]]) -> StepInputs:
        order = [i for i, (_, ph) in enumerate(batch) if ph == Phase.REFRESH]
        num_refresh = len(order)
        order += [i for i, (_, ph) in enumerate(batch) if ph != Phase.REFRESH]
        ids, positions, seqlens = [], [], []
        p = _Packing()
        dec_hidden, dec_pos, dec_req = [], [], []
        offset = 0
        for j, i in enumerate(order):
            r, phase = batch[i]
            refresh = phase == Phase.REFRESH
            lo, hi = (0, r.seq_len) if refresh else r.computed_range
            ids.append(np.asarray(r.tokens[lo:hi], dtype=np.int64))
            positions.append(np.arange(lo, hi, dtype=np.int64))
            seqlens.append(hi - lo)
            if refresh:
                self._pack_refresh(r, offset, p)
            else:
                self._pack_reuse(r, hi - lo, p)
            masked = r.masked_positions()
            dec_hidden += [offset + max(q - r.logit_shift, 0) - lo for q in masked]
            dec_pos += masked
            dec_req += [j] * len(masked)
            offset += hi - lo
        store_src, store_dst, updates, sparse, sparse_entries = (p.store_src, p.store_dst, p.updates, p.sparse,
                                                                 p.sparse_entries)
        reuse_rows, reuse_table = p.reuse_rows, p.reuse_table
        refresh_rows = sum(seqlens[:num_refresh])
        reqs = [batch[order[j]][0] for j in dec_req]
        temps = [r.params.temperature for r in reqs]
        randoms = [r.params.remasking == "random" for r in reqs]
        algs = [ALG_CODES[r.params.alg or r.params.remasking or "low_confidence"] for r in reqs]
        top_ps = [r.params.top_p or 1.0 for r in reqs]
        top_ks = [r.params.top_k or 0 for r in reqs]
        alg_temps = [r.params.alg_temp or 0.0 for r in reqs]
        logprob_rows = [i for i, r in enumerate(reqs) if r.params.logprobs is not None]
        top_logprobs = max((r.params.logprobs for r in reqs if r.params.logprobs is not None), default=0)
        arrays = {
            "ids": np.concatenate(ids), "positions": np.concatenate(positions),
            "cu": np.cumsum([0, *seqlens], dtype=np.int32),
            "dec_hidden": np.asarray(dec_hidden, dtype=np.int64), "dec_pos": np.asarray(dec_pos, dtype=np.int64),
            "dec_temp": np.asarray(temps, dtype=np.float64),
            "dec_seed": np.asarray([r.params.seed for r in reqs], dtype=np.int64),
            "dec_step": np.asarray([r.global_step for r in reqs], dtype=np.int64),
            "dec_random": np.asarray(randoms, dtype=np.bool_),
            "dec_alg": np.asarray(algs, dtype=np.int64), "dec_top_p": np.asarray(top_ps, dtype=np.float64),
            "dec_top_k": np.asarray(top_ks, dtype=np.int64), "dec_alg_temp": np.asarray(alg_temps, dtype=np.float64),
        }
        if reuse_rows:
            arrays["reuse_cu"] = np.cumsum([0, *reuse_rows], dtype=np.int32)
            arrays["reuse_table"] = np.asarray(reuse_table, dtype=np.int32)
        if store_src:
            arrays["store_src"] = np.concatenate(store_src)
            arrays["store_dst"] = np.concatenate(store_dst)
        groups = plan_groups(sparse, self.pool.heads, self.model.config.num_heads, self.pool.trash_row) \
            if sparse else []
        for i, g in enumerate(groups):
            arrays.update({f"sparse{i}_{k}": v for k, v in g.items()})
        if updates:
            arrays["table_rows"] = np.asarray([u[0] for u in updates], dtype=np.int64)
            arrays["tables"] = np.stack([u[1] for u in updates])
            arrays["counts"] = np.stack([u[2] for u in updates])
        t = self.stager.send(arrays)
        sparse_groups = [to_group({k: t[f"sparse{i}_{k}"] for k in g}, g) for i, g in enumerate(groups)]
        per_req = np.bincount(np.asarray(dec_req, dtype=np.int64), minlength=len(order))
        ends = np.cumsum(per_req)
        bounds = [(int(e - c), int(e)) for c, e in zip(per_req, ends, strict=True)]
        return StepInputs(
            order=order, input_ids=t["ids"], packed=PackedBatch(t["positions"], seqlens, t["cu"]),
            num_refresh=num_refresh, refresh_rows=refresh_rows, refresh_seqlens=seqlens[:num_refresh],
            reuse_cu=t.get("reuse_cu"), reuse_table_row=t.get("reuse_table"), max_reuse_rows=max(reuse_rows, default=0),
            store_src=t.get("store_src"), store_dst=t.get("store_dst"), table_rows=t.get("table_rows"),
            tables=t.get("tables"), counts=t.get("counts"),
            decode=DecodeRows(t["dec_hidden"], t["dec_pos"], t["dec_temp"], t["dec_seed"], t["dec_step"],
                              t["dec_random"], t["dec_alg"], t["dec_top_p"], t["dec_top_k"], t["dec_alg_temp"],
                              logprob_rows or None, top_logprobs),
            sampling=any(x > 0 for x in temps), any_random=any(randoms), any_dream=any(a >= 2 for a in algs),
            any_filter=any(x < 1.0 for x in top_ps) or any(k > 0 for k in top_ks), dec_bounds=bounds,
            dec_positions=dec_pos,
            sparse_groups=sparse_groups, sparse_entries=sparse_entries,
            sparse_keep=[it.keep for it in sparse],
        )

    def _pack_refresh(self, r: Request, offset: int, p: _Packing) -> None:
        """A Refresh: the pool places the K/V of the positions it may cache (all, or per head for a
        sparse request: chosen in the forward), and its slot-table row is rebuilt."""
        if self.pool is None or not self.pool.holds(r.request_id):
            return
        kept = np.asarray(r.cacheable_positions(), dtype=np.int64)
        if r.sparse:  # each head keeps its own r.cached_slots of them, chosen in the forward
            entry, dst = self.pool.assign_sparse(r.request_id, r.cached_slots)
            p.sparse.append(SparseItem(offset, r.seq_len, (r.block_start, r.block_end), kept, r.cached_slots,
                                       dst, self.sparse_window))
            p.sparse_entries.append(entry)
        else:
            entry, dst = self.pool.assign(r.request_id, kept)
            p.store_src.append(offset + kept)
            p.store_dst.append(dst.reshape(-1))
        p.updates.append((entry.table_row, *self.pool.table_update(entry)))

    def _pack_reuse(self, r: Request, rows: int, p: _Packing) -> None:
        """A Reuse: its rows, and the slot-table row its cache lives in."""
        p.reuse_rows.append(rows)
        p.reuse_table.append(self.pool.entries[r.request_id].table_row)

    # --- forward ------------------------------------------------------------------------------
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        pool = self.pool
        if inputs.table_rows is not None:
            pool.write_tables(inputs.table_rows, inputs.tables, inputs.counts)
        self.last_graphed = self.graphs is not None and self.graphs.fits(inputs)
        if self.last_graphed:
            return self.graphs.replay(inputs)
        keep = inputs.sparse_keep
        kept = torch.empty(self.model.config.num_layers, len(keep), pool.heads, max(keep), dtype=torch.long,
                           device=self.device) if keep else None
        ctx = PoolAttention.for_step(pool, inputs, self.use_kernels, kept)
        hidden = self.model(inputs.input_ids, inputs.packed, ctx)
        if keep:
            pool.record_kept(inputs.sparse_entries, kept, keep)
        return hidden

    # --- decode -------------------------------------------------------------------------------
    def decode(self, inputs: StepInputs, hidden: torch.Tensor) -> list[RowResults]:
        mask = self.model.config.mask_token_id
        if self.fused_head and not (inputs.sampling or inputs.any_random or inputs.any_dream or inputs.any_filter
                                    or inputs.decode.logprob_rows):  # every row greedy low_confidence
            (tokens, conf), lps = fused_greedy_decode(hidden, self.model.lm_head, inputs.decode, mask), None
        else:
            tokens, conf, _, lps = budgeted_decode(
                hidden, self.model.lm_head, inputs.decode, self.logit_budget_bytes, mask, sampling=inputs.sampling,
                any_random=inputs.any_random, any_dream=inputs.any_dream, any_filter=inputs.any_filter)
        tokens, conf = _to_host(tokens, conf)
        by_row = _logprobs_by_row(inputs.decode, lps)
        results: list[RowResults | None] = [None] * len(inputs.order)
        pos = inputs.dec_positions
        for j, (s, e) in enumerate(inputs.dec_bounds):
            row_lps = [by_row[i] for i in range(s, e)] if by_row and s in by_row else None
            results[inputs.order[j]] = RowResults(pos[s:e], tokens[s:e], conf[s:e], row_lps)
        return results


def _logprobs_by_row(rows: DecodeRows, lps) -> dict[int, tuple]:
    """Decode row -> (logprob, rank, top alternatives), for the rows that asked (one host copy, and
    only in steps where some request asked)."""
    if lps is None or not rows.logprob_rows:
        return {}
    k = rows.top_logprobs
    values = torch.cat([lps.logprob.double().unsqueeze(1), lps.top_logprobs.double()], 1).cpu().tolist()
    ints = torch.cat([lps.rank.unsqueeze(1), lps.top_ids], 1).cpu().tolist()
    return {row: (v[0], n[0], list(zip(n[1:k + 1], v[1:k + 1], strict=True)))
            for row, v, n in zip(rows.logprob_rows, values, ints, strict=True)}


def _to_host(tokens: torch.Tensor, conf: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """The step's one device-to-host copy (both arrays in one buffer), which also waits for the step."""
    if tokens.device.type == "cpu":
        return tokens.tolist(), conf
    both = torch.cat([tokens.to(torch.float64), conf.to(torch.float64)]).cpu()
    n = tokens.numel()
    return both[:n].long().tolist(), both[n:].to(conf.dtype)
