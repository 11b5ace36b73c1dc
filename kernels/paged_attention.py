"""Bidirectional attention of each request's query rows to its own fresh K/V plus its cached K/V,
read straight from a paged pool through a per-(request, KV head) slot table: no gather copy, no cat.

Layout (one layer):
- `q [T, Hq, D]`, `k`/`v [T, Hkv, D]`: this step's rows, request b's at `cu[b]:cu[b+1]`; its queries
  attend to all of its own fresh rows (bidirectional).
- `k_cache`/`v_cache [num_pages * page_size, D]`: every page belongs to one (request, KV head).
- `table_row [B]`: request b's row in `block_tables`/`slot_counts`, or -1 when it has no cache.
- `block_tables [R, Hkv, P]`: page ids of (row, head); slot s lives at row
  `block_tables[r, h, s // page_size] * page_size + s % page_size` of the cache.
- `slot_counts [R, Hkv]`: how many slots (r, h) holds. Heads may hold different counts and positions
  (head-centric sparse retention); rotary is already applied to cached keys, so positions are not needed.

`paged_attention_reference` is the PyTorch definition (one SDPA per request, the CPU path and the
oracle of the tests); `paged_attention` runs the Triton kernel on CUDA (or under TRITON_INTERPRET=1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kernels import KERNEL_DTYPES

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU installs without triton use the reference
    triton = None


def cache_rows(block_tables: torch.Tensor, row: int, count: int, page_size: int) -> torch.Tensor:
    """[Hkv, count] cache rows of the first `count` slots of every head of table row `row`."""
    slots = torch.arange(count, device=block_tables.device)
    return block_tables[row][:, slots // page_size].long() * page_size + slots % page_size


def reference_plan(cu, table_row, block_tables, slot_counts, page_size: int, q_heads: int) -> list[tuple]:
    """Per request of the batch, what `paged_attention_reference` reads besides its fresh rows:
    (lo, hi, cache rows [Hkv, n] or None, key mask [1, Hq, 1, keys] or None). The same for every
    layer of a step (slot tables are per request and head, not per layer): build it once per step."""
    hkv = block_tables.shape[1]
    bounds, rows_of, counts_of = cu.tolist(), table_row.tolist(), slot_counts.tolist()
    plan = []
    for b, r in enumerate(rows_of):
        lo, hi = bounds[b], bounds[b + 1]
        if hi == lo:
            continue
        counts = counts_of[r] if r >= 0 else [0] * hkv
        n = max(counts)
        idx = mask = None
        if n:
            idx = cache_rows(block_tables, r, n, page_size)  # [Hkv, n]
        if min(counts) != n:  # slots past a head's count are padding: any valid row, masked out
            keep = torch.arange(n, device=idx.device)[None, :] < torch.tensor(counts, device=idx.device)[:, None]
            idx = idx.masked_fill(~keep, 0)
            keep = torch.cat([keep.new_ones(hkv, hi - lo), keep], dim=1).repeat_interleave(q_heads // hkv, 0)
            mask = keep[None, :, None, :]  # [1, Hq, 1, keys]
        plan.append((lo, hi, idx, mask))
    return plan


def paged_attention_reference(q, k, v, cu, k_cache, v_cache, table_row, block_tables, slot_counts, page_size: int,
                              sm_scale: float | None = None, out: torch.Tensor | None = None,
                              plan: list[tuple] | None = None) -> torch.Tensor:
    """Per request: keys are its fresh rows followed by its cached slots, in slot order. Equal slot
    counts over heads give one plain SDPA call (the dense engine's exact computation); differing
    counts pad the shorter heads and mask the padding. `plan`: `reference_plan` of these arguments."""
    hq, hkv = q.shape[1], k.shape[1]
    out = torch.empty_like(q) if out is None else out
    if plan is None:
        plan = reference_plan(cu, table_row, block_tables, slot_counts, page_size, hq)
    for lo, hi, idx, mask in plan:
        ki, vi = k[lo:hi], v[lo:hi]
        if idx is not None:
            ki = torch.cat([ki, k_cache[idx].transpose(0, 1)])
            vi = torch.cat([vi, v_cache[idx].transpose(0, 1)])
        oi = F.scaled_dot_product_attention(q[lo:hi].transpose(0, 1).unsqueeze(0), ki.transpose(0, 1).unsqueeze(0),
                                            vi.transpose(0, 1).unsqueeze(0), attn_mask=mask, scale=sm_scale,
                                            enable_gqa=hq != hkv)
        out[lo:hi] = oi.squeeze(0).transpose(0, 1)
    return out


if triton is not None:

    @triton.jit
    def _online_softmax_step(q, kt, v, valid, m_i, l_i, acc, qk_scale, PRECISION: tl.constexpr):
        qk = tl.dot(q, kt, input_precision=PRECISION) * qk_scale
        qk = tl.where(valid[None, :], qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        return m_new, l_i, acc

    @triton.jit
    def _load_keys(base, rows, s_row, offs_d, ok, d_ok, K_ROWS: tl.constexpr):
        """Keys as [BLOCK_D, BLOCK_N]: loaded transposed, or (K_ROWS) as rows then transposed in
        registers, which keeps each thread's loads along the contiguous head dimension."""
        if K_ROWS:
            kt = tl.trans(tl.load(base + rows[:, None] * s_row + offs_d[None, :], mask=ok[:, None] & d_ok[None, :],
                                  other=0.0))
        else:
            kt = tl.load(base + rows[None, :] * s_row + offs_d[:, None], mask=ok[None, :] & d_ok[:, None], other=0.0)
        return kt

    # n_rows (the packed rows, only read with splits) is not specialised on: its divisibility changes
    # from step to step and would compile the one-split kernel again mid-serving.
    @triton.jit(do_not_specialize=["n_rows"])
    def _paged_attention_kernel(
        Q, K, V, KC, VC, O, CU, TROW, TABLES, COUNTS,
        qk_scale, group,
        s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_ct, s_ot, s_oh, s_tr, s_th, s_cr,
        PAGE: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr,
        K_ROWS: tl.constexpr, HEAD_MAJOR: tl.constexpr, SPLITS: tl.constexpr, GROUPED: tl.constexpr,
        W_ACC, W_ML, n_rows,
    ):
        # One program: a tile of BLOCK_M query rows of one query head, or (GROUPED) a tile of BLOCK_M
        # (row, query head) pairs of one KV head's group, rows outer: every K/V tile is read once per KV
        # head rather than once per query head, and a 33-row block of 7 heads fills 231 of 256 entries.
        if HEAD_MAJOR:  # the heads of one request launch together (its K/V group shares L2)
            h = tl.program_id(0)
            b = tl.program_id(1)
        else:
            b = tl.program_id(0)
            h = tl.program_id(1)
        q_lo = tl.load(CU + b)
        q_hi = tl.load(CU + b + 1)
        if GROUPED:
            hk = h
            n_q = (q_hi - q_lo) * group
        else:
            hk = h // group
            n_q = q_hi - q_lo
        if SPLITS == 1:
            f0 = tl.program_id(2) * BLOCK_M
        else:  # each split takes a share of the cached slots; partial results go to W_ACC / W_ML
            split = tl.program_id(2) % SPLITS
            f0 = (tl.program_id(2) // SPLITS) * BLOCK_M
        if f0 < n_q:
            offs_f = f0 + tl.arange(0, BLOCK_M)
            f_ok = offs_f < n_q
            if GROUPED:
                rows_m = q_lo + offs_f // group
                heads_m = hk * group + offs_f % group
                q_off = rows_m[:, None] * s_qt + heads_m[:, None] * s_qh
                o_off = rows_m[:, None] * s_ot + heads_m[:, None] * s_oh
            else:
                rows_m = q_lo + offs_f
                heads_m = h
                q_off = rows_m[:, None] * s_qt + h * s_qh
                o_off = rows_m[:, None] * s_ot + h * s_oh
            offs_d = tl.arange(0, BLOCK_D)
            d_ok = offs_d < HEAD_DIM
            q = tl.load(Q + q_off + offs_d[None, :], mask=f_ok[:, None] & d_ok[None, :], other=0.0)
            m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
            l_i = tl.zeros([BLOCK_M], tl.float32)
            acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
            # (a) the request's own fresh rows: every query sees at least one key, so m_i is finite after
            # (with splits: in the first; the others start on a tile holding at least one valid slot).
            fresh_hi = q_hi
            if SPLITS > 1:
                fresh_hi = tl.where(split == 0, q_hi, q_lo)
            for n0 in range(q_lo, fresh_hi, BLOCK_N):
                offs_n = n0 + tl.arange(0, BLOCK_N)
                ok = offs_n < q_hi
                kt = _load_keys(K + hk * s_kh, offs_n, s_kt, offs_d, ok, d_ok, K_ROWS)
                v = tl.load(V + offs_n[:, None] * s_vt + hk * s_vh + offs_d[None, :],
                            mask=ok[:, None] & d_ok[None, :], other=0.0)
                m_i, l_i, acc = _online_softmax_step(q, kt, v, ok, m_i, l_i, acc, qk_scale, PRECISION)
            # (b) its cached slots of this KV head, page by page through the slot table.
            r = tl.load(TROW + b)
            if r >= 0:
                count = tl.load(COUNTS + r * s_cr + hk)
                lo = 0
                if SPLITS > 1:
                    share = tl.cdiv(tl.cdiv(count, SPLITS), BLOCK_N) * BLOCK_N
                    lo = split * share
                    count = tl.minimum(count, lo + share)
                for n0 in range(lo, count, BLOCK_N):
                    slots = n0 + tl.arange(0, BLOCK_N)
                    ok = slots < count
                    page = tl.load(TABLES + r * s_tr + hk * s_th + slots // PAGE, mask=ok, other=0)
                    rows = page.to(tl.int64) * PAGE + slots % PAGE
                    kt = _load_keys(KC, rows, s_ct, offs_d, ok, d_ok, K_ROWS)
                    v = tl.load(VC + rows[:, None] * s_ct + offs_d[None, :], mask=ok[:, None] & d_ok[None, :],
                                other=0.0)
                    m_i, l_i, acc = _online_softmax_step(q, kt, v, ok, m_i, l_i, acc, qk_scale, PRECISION)
            if SPLITS == 1:
                out = acc / l_i[:, None]
                tl.store(O + o_off + offs_d[None, :], out.to(O.dtype.element_ty), mask=f_ok[:, None] & d_ok[None, :])
            else:  # workspaces [SPLITS, T, Hq, BLOCK_D] and [SPLITS, T, Hq, 2], contiguous
                nh = tl.num_programs(0) if HEAD_MAJOR else tl.num_programs(1)
                if GROUPED:
                    nh = nh * group
                row = (split * n_rows + rows_m) * nh + heads_m
                tl.store(W_ACC + row[:, None] * BLOCK_D + offs_d[None, :], acc, mask=f_ok[:, None])
                tl.store(W_ML + row * 2, m_i, mask=f_ok)
                tl.store(W_ML + row * 2 + 1, l_i, mask=f_ok)

    @triton.jit
    def _combine_splits_kernel(W_ACC, W_ML, O, s_ot, s_oh, T, NH, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                               SPLITS: tl.constexpr):
        """One (row, head): the splits' partial softmaxes merged (log2 units, as the kernel keeps them)."""
        t = tl.program_id(0)
        h = tl.program_id(1)
        offs_s = tl.arange(0, SPLITS)
        offs_d = tl.arange(0, BLOCK_D)
        row = (offs_s * T + t) * NH + h
        m = tl.load(W_ML + row * 2)
        l_s = tl.load(W_ML + row * 2 + 1)
        acc = tl.load(W_ACC + row[:, None] * BLOCK_D + offs_d[None, :])
        w = tl.exp2(m - tl.max(m, 0))  # a split that saw no key has m = -inf: weight 0
        out = tl.sum(acc * w[:, None], 0) / tl.sum(l_s * w, 0)
        tl.store(O + t * s_ot + h * s_oh + offs_d, out.to(O.dtype.element_ty), mask=offs_d < HEAD_DIM)


def kernel_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the engine should run the Triton kernel (CUDA) rather than the reference (everything else;
    tests call `paged_attention` directly under TRITON_INTERPRET=1 on the CPU)."""
    return triton is not None and device.type == "cuda" and dtype in KERNEL_DTYPES


def block_m_for(max_q_rows: int) -> int:
    return 16 if max_q_rows <= 16 else 32 if max_q_rows <= 32 else 64


def grouped_block_m(max_q_rows: int, group: int, cap: int) -> int:
    """Grouped tiles hold (row, query head) pairs: the smallest power of two >= rows x group, up to
    `cap` (LLaDA's 32 rows x 1 head: 32; Dream's 33 rows x 7 heads = 231: two tiles of 128)."""
    return max(16, min(cap, triton.next_power_of_2(max(max_q_rows, 1) * group)))


@dataclass(frozen=True)
class PagedConfig:
    """Launch choices of the kernel (every one computes the same attention): keys per tile, warps per
    program, software-pipelining depth, keys loaded as rows (`k_rows`), heads fastest in the grid
    (`head_major`), and `splits`: programs that share one (request, head)'s cached slots, each keeping
    a partial softmax in a float32 workspace that a second kernel merges (more programs in flight when
    requests x heads alone leave SMs idle: small batches, long caches). `grouped`: one program per KV
    head serves all of its query heads (GQA: Dream's K/V read once per KV head instead of 7 times),
    over tiles of (row, query head) pairs of at most `grouped_block_m` entries. The default is what the
    engine runs; `benchmarks.attention_bandwidth` times the others."""
    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2
    k_rows: bool = False
    head_major: bool = False
    splits: int = 1  # programs sharing one (request, head)'s cached slots, merged by a second kernel
    grouped: bool = False  # one program per (request, KV head, tile) serving the head's whole group
    grouped_block_m: int = 128  # the largest tile of (row, query head) pairs a grouped program takes

    def __post_init__(self):
        if self.splits < 1 or self.splits & (self.splits - 1):
            raise ValueError(f"splits: a power of two >= 1, got {self.splits}")
        if self.grouped_block_m < 16 or self.grouped_block_m & (self.grouped_block_m - 1):
            raise ValueError(f"grouped_block_m: a power of two >= 16, got {self.grouped_block_m}")


DEFAULT_CONFIG = PagedConfig()
# What `benchmarks.attention_bandwidth` times against the default (and `benchmarks.compile_check` compiles).
# (compile_check, sm_90, bf16, LLaDA-8B: the default holds 3 programs of 4 warps an SM by registers; `w8`
# 2 of 8 warps; `n32-s4` 3, each with 3 tiles of keys in flight; `s3` 2, with 2 tiles in flight. Dream-7B,
# grouped: `gqa` 1 program of 8 warps (tiles of 128 pairs), `gqa-m64-split8` 2 of 4 warps.)
VARIANTS = {"default": DEFAULT_CONFIG, "rows": PagedConfig(k_rows=True), "w8": PagedConfig(num_warps=8),
            "n32-s4": PagedConfig(block_n=32, num_stages=4), "s3": PagedConfig(num_stages=3),
            "rows-heads": PagedConfig(k_rows=True, head_major=True),
            "split4": PagedConfig(splits=4), "split8": PagedConfig(splits=8),
            # GQA-grouped (issue 25): K/V read once per KV head; with splits for one request's few programs
            "gqa": PagedConfig(grouped=True, num_warps=8),
            "gqa-split4": PagedConfig(grouped=True, num_warps=8, splits=4),
            "gqa-m64-split8": PagedConfig(grouped=True, grouped_block_m=64, splits=8)}


def paged_attention(q, k, v, cu, k_cache, v_cache, table_row, block_tables, slot_counts, page_size: int,
                    max_q_rows: int, sm_scale: float | None = None, out: torch.Tensor | None = None,
                    block_m: int | None = None, config: PagedConfig = DEFAULT_CONFIG) -> torch.Tensor:
    """The Triton kernel (same contract as `paged_attention_reference`). `max_q_rows` bounds every
    request's query rows: it sets the grid, so it must be known on the host (no device read)."""
    t, hq, d = q.shape
    hkv = k.shape[1]
    out = torch.empty_like(q) if out is None else out
    num_seqs = cu.numel() - 1
    if t == 0 or num_seqs == 0:
        return out
    scale = (1.0 / math.sqrt(d)) if sm_scale is None else sm_scale
    group = hq // hkv
    if config.grouped:  # (a caller's block_m counts query rows of one head: not this tiling)
        bm = grouped_block_m(max_q_rows, group, config.grouped_block_m)
        tiles, heads = triton.cdiv(max(max_q_rows, 1) * group, bm) * config.splits, hkv
    else:
        bm = block_m or block_m_for(max_q_rows)
        tiles, heads = triton.cdiv(max(max_q_rows, 1), bm) * config.splits, hq
    grid = (heads, num_seqs, tiles) if config.head_major else (num_seqs, heads, tiles)
    for x in (q, k, v, out):
        assert x.stride(-1) == 1, "the head dimension must be contiguous"
    block_d = max(16, triton.next_power_of_2(d))
    w_acc = w_ml = out  # unused with one split
    if config.splits > 1:
        w_acc = torch.empty(config.splits, t, hq, block_d, dtype=torch.float32, device=q.device)
        w_ml = torch.empty(config.splits, t, hq, 2, dtype=torch.float32, device=q.device)
    _paged_attention_kernel[grid](
        q, k, v, k_cache, v_cache, out, cu, table_row, block_tables, slot_counts,
        scale * 1.4426950408889634, group,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), k_cache.stride(0),
        out.stride(0), out.stride(1), block_tables.stride(0), block_tables.stride(1), slot_counts.stride(0),
        PAGE=page_size, HEAD_DIM=d, BLOCK_D=block_d, BLOCK_M=bm, BLOCK_N=config.block_n,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32", K_ROWS=config.k_rows,
        HEAD_MAJOR=config.head_major, SPLITS=config.splits, GROUPED=config.grouped, W_ACC=w_acc, W_ML=w_ml, n_rows=t,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    if config.splits > 1:
        _combine_splits_kernel[(t, hq)](w_acc, w_ml, out, out.stride(0), out.stride(1), t, hq, HEAD_DIM=d,
                                        BLOCK_D=block_d, SPLITS=config.splits, num_warps=1)
    return out
