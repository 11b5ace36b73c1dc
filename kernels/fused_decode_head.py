"""The greedy decode head fused with the vocabulary projection: per decoded row, the best token and its
confidence, without the `[rows, vocab]` logits ever existing (logit budgeting at its limit).

For greedy rows under LLaDA's low_confidence rule (what `pick_tokens` computes at temperature 0):
- token = the argmax of the row's logits over the vocabulary without [MASK] (lowest id on ties);
- confidence = softmax(logits)[token], [MASK] included in the normalisation.

Both are reductions that can be carried tile by tile: the vocabulary is cut into tiles of `block_v`
ids, each tile's logits are `hidden @ W_tile^T` (rounded to the model's dtype and scaled, as the model's
head rounds them), and only each row's running best (value, id) and its online log-sum-exp (running max
m, sum of exp(logit - m)) survive a tile. A launch gives every program a contiguous run of tiles (its
chunk) and leaves one partial per (row, chunk); `_combine` merges the chunks on the host side of the
launch (a few small tensor ops): the first chunk holding the best value wins, as a plain argmax would.

`greedy_head_reference` is the PyTorch definition (the same tiles, as the CPU would run them);
`greedy_head` runs the Triton kernel on CUDA (or under TRITON_INTERPRET=1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU installs without triton use the reference
    triton = None


def _conf_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32  # what pick_tokens returns


def greedy_head_reference(hidden: torch.Tensor, hidden_index: torch.Tensor, weight: torch.Tensor,
                          mask_token_id: int | None, scale: float = 1.0, block_v: int = 4096
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [R] long, confidences [R]) for the hidden rows `hidden_index`, one vocabulary tile of
    `block_v` ids at a time (the largest temporary is [R, block_v])."""
    rows = hidden.index_select(0, hidden_index)
    r, vocab = rows.shape[0], weight.shape[0]
    cdt = _conf_dtype(hidden.dtype)
    best = torch.full((r,), float("-inf"), dtype=cdt, device=hidden.device)
    best_id = torch.zeros(r, dtype=torch.long, device=hidden.device)
    m = torch.full((r,), float("-inf"), dtype=cdt, device=hidden.device)
    s = torch.zeros(r, dtype=cdt, device=hidden.device)
    for v0 in range(0, vocab, block_v):
        logits = F.linear(rows, weight[v0:v0 + block_v])
        if scale != 1.0:  # as the model's head: after the product, in the model's dtype
            logits = logits * scale
        work = logits.to(cdt)
        m_new = torch.maximum(m, work.amax(-1))
        s = s * torch.exp(m - m_new) + torch.exp(work - m_new.unsqueeze(1)).sum(-1)
        m = m_new
        if mask_token_id is not None and v0 <= mask_token_id < v0 + work.shape[1]:
            work = work.clone()
            work[:, mask_token_id - v0] = float("-inf")
        idx = work.argmax(-1)  # first of equal maxima
        val = work.gather(1, idx.unsqueeze(1)).squeeze(1)
        better = val > best  # strictly: an earlier tile keeps a tie
        best = torch.where(better, val, best)
        best_id = torch.where(better, idx + v0, best_id)
    return best_id, torch.exp(best - (m + torch.log(s)))


if triton is not None:

    @triton.jit
    def _greedy_head_kernel(
        H, IDX, W, P_VAL, P_ID, P_M, P_S,
        n_rows, vocab, hidden, s_h, s_w, mask_id, scale, tiles_per_chunk, n_tiles, n_chunks,
        BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, ROUND: tl.constexpr,
        SCALED: tl.constexpr, PRECISION: tl.constexpr,
    ):
        # Row blocks vary fastest in the grid: programs reading the same weight tiles run together (L2).
        pid_m = tl.program_id(0)
        chunk = tl.program_id(1)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        m_ok = offs_m < n_rows
        src = tl.load(IDX + offs_m, mask=m_ok, other=0).to(tl.int64)
        best = tl.full([BLOCK_M], float("-inf"), tl.float32)
        best_id = tl.zeros([BLOCK_M], tl.int32)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        t_lo = chunk * tiles_per_chunk
        t_hi = tl.minimum(t_lo + tiles_per_chunk, n_tiles)  # every tile holds at least one id
        for t in range(t_lo, t_hi):
            offs_v = t * BLOCK_V + tl.arange(0, BLOCK_V)
            v_ok = offs_v < vocab
            acc = tl.zeros([BLOCK_M, BLOCK_V], tl.float32)
            for k0 in range(0, hidden, BLOCK_K):
                offs_k = k0 + tl.arange(0, BLOCK_K)
                k_ok = offs_k < hidden
                h = tl.load(H + src[:, None] * s_h + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
                w = tl.load(W + offs_v.to(tl.int64)[:, None] * s_w + offs_k[None, :],
                            mask=v_ok[:, None] & k_ok[None, :], other=0.0)
                acc = tl.dot(h, tl.trans(w), acc, input_precision=PRECISION)
            logits = acc
            if ROUND:  # the model's head gives logits in its dtype: round as it does
                logits = logits.to(W.dtype.element_ty).to(tl.float32)
            if SCALED:
                logits = logits * scale
                if ROUND:
                    logits = logits.to(W.dtype.element_ty).to(tl.float32)
            logits = tl.where(v_ok[None, :], logits, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(logits, 1))
            l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(logits - m_new[:, None]), 1)
            m_i = m_new
            pick = tl.where(offs_v[None, :] == mask_id, float("-inf"), logits)
            t_best, t_arg = tl.max(pick, 1, return_indices=True, return_indices_tie_break_left=True)
            better = t_best > best
            best = tl.where(better, t_best, best)
            best_id = tl.where(better, t_arg + t * BLOCK_V, best_id)
        part = offs_m * n_chunks + chunk
        tl.store(P_VAL + part, best, mask=m_ok)
        tl.store(P_ID + part, best_id, mask=m_ok)
        tl.store(P_M + part, m_i, mask=m_ok)
        tl.store(P_S + part, l_i, mask=m_ok)


@dataclass(frozen=True)
class HeadConfig:
    """Launch choices (each computes the same result): vocabulary ids and hidden columns per tile,
    warps, pipelining depth, and how many programs to aim for (row blocks x vocabulary chunks; None:
    four per SM on CUDA, so that one request's few rows still spread the weight read over the chip)."""
    block_v: int = 128
    block_k: int = 64
    num_warps: int | None = None  # None: 4, or 8 for 64-row tiles (a [64, 128] float32 tile in registers)
    num_stages: int = 3
    programs: int | None = None


DEFAULT_HEAD_CONFIG = HeadConfig()


def block_m_for(rows: int) -> int:
    return 16 if rows <= 16 else 32 if rows <= 32 else 64


def _target_programs(device: torch.device, config: HeadConfig) -> int:
    if config.programs is not None:
        return config.programs
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 8


def greedy_head(hidden: torch.Tensor, hidden_index: torch.Tensor, weight: torch.Tensor, mask_token_id: int | None,
                scale: float = 1.0, config: HeadConfig = DEFAULT_HEAD_CONFIG) -> tuple[torch.Tensor, torch.Tensor]:
    """The Triton kernel (same contract as `greedy_head_reference`)."""
    r = hidden_index.numel()
    vocab, dim = weight.shape
    dev = hidden.device
    if r == 0:
        return torch.empty(0, dtype=torch.long, device=dev), torch.empty(0, dtype=_conf_dtype(hidden.dtype), device=dev)
    assert hidden.stride(-1) == 1 and weight.stride(-1) == 1, "the hidden dimension must be contiguous"
    bm = block_m_for(r)
    row_blocks = triton.cdiv(r, bm)
    n_tiles = triton.cdiv(vocab, config.block_v)
    per_chunk = triton.cdiv(n_tiles, max(1, min(n_tiles, _target_programs(dev, config) // row_blocks)))
    chunks = triton.cdiv(n_tiles, per_chunk)
    p_val = torch.empty(r, chunks, dtype=torch.float32, device=dev)
    p_id = torch.empty(r, chunks, dtype=torch.int32, device=dev)
    p_m, p_s = torch.empty_like(p_val), torch.empty_like(p_val)
    _greedy_head_kernel[(row_blocks, chunks)](
        hidden, hidden_index, weight, p_val, p_id, p_m, p_s,
        r, vocab, dim, hidden.stride(0), weight.stride(0), -1 if mask_token_id is None else mask_token_id,
        float(scale), per_chunk, n_tiles, chunks,
        BLOCK_M=bm, BLOCK_V=config.block_v, BLOCK_K=config.block_k, ROUND=weight.dtype != torch.float32,
        SCALED=scale != 1.0, PRECISION="ieee" if weight.dtype == torch.float32 else "tf32",
        num_warps=config.num_warps or (8 if bm == 64 else 4), num_stages=config.num_stages,
    )
    return _combine(p_val, p_id, p_m, p_s)


def _combine(p_val, p_id, p_m, p_s) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunks merged per row: the first chunk holding the best value gives the token; the log-sum-exps
    add up (each chunk's sum rescaled to the largest running max)."""
    first = p_val.argmax(1, keepdim=True)  # first of equal maxima: chunks run in vocabulary order
    best = p_val.gather(1, first).squeeze(1)
    tokens = p_id.gather(1, first).squeeze(1).long()
    m = p_m.amax(1)
    lse = m + torch.log((p_s * torch.exp(p_m - m.unsqueeze(1))).sum(1))
    return tokens, torch.exp(best - lse)
