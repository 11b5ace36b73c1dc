"""Rotary embeddings of a layer's queries and keys in one kernel (instead of ~18 small ones).

Rotate-half layout (LLaDA and Qwen2/Dream): for each head row `x = [x1, x2]` (halves of D),
`out = [x1 * cos - x2 * sin, x2 * cos + x1 * sin]` at the row's position, computed in the tables'
precision (float32 for half-precision models) and cast back. `rotary_reference` is the PyTorch
definition (the models' own Rotary math); `rotary` is the Triton kernel, returning new tensors.
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None


def rotate_reference(x: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [T, H, D] at positions [T]; cos/sin [max_positions, D] (the halves repeat)."""
    c, s = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
    xf = x.to(c.dtype)
    half = x.shape[-1] // 2
    rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
    return (xf * c + rotated * s).to(x.dtype)


def rotary_reference(q, k, positions, cos, sin):
    return rotate_reference(q, positions, cos, sin), rotate_reference(k, positions, cos, sin)


if triton is not None:

    @triton.jit
    def _rotate_rows(X, O, row, pos, C, S, s_xt, s_xh, s_ot, s_oh, s_c, heads,
                     HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, BLOCK_D)[None, :]
        ok = (h < heads) & (d < HALF)
        c = tl.load(C + pos * s_c + d, mask=d < HALF, other=0.0)
        s = tl.load(S + pos * s_c + d, mask=d < HALF, other=0.0)
        base = X + row * s_xt + h * s_xh + d
        x1 = tl.load(base, mask=ok, other=0.0)
        x2 = tl.load(base + HALF, mask=ok, other=0.0)
        x1f, x2f = x1.to(c.dtype), x2.to(c.dtype)
        out = O + row * s_ot + h * s_oh + d
        tl.store(out, (x1f * c - x2f * s).to(O.dtype.element_ty), mask=ok)
        tl.store(out + HALF, (x2f * c + x1f * s).to(O.dtype.element_ty), mask=ok)

    @triton.jit
    def _rotary_kernel(Q, K, QO, KO, P, C, S, s_qt, s_qh, s_kt, s_kh, s_qot, s_qoh, s_kot, s_koh, s_c, hq, hk,
                       HALF: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_D: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        pos = tl.load(P + row)
        _rotate_rows(Q, QO, row, pos, C, S, s_qt, s_qh, s_qot, s_qoh, s_c, hq, HALF, BLOCK_HQ, BLOCK_D)
        _rotate_rows(K, KO, row, pos, C, S, s_kt, s_kh, s_kot, s_koh, s_c, hk, HALF, BLOCK_HK, BLOCK_D)


def rotary(q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """q [T, Hq, D], k [T, Hkv, D] (any row/head strides, contiguous D) -> rotated copies."""
    t, hq, d = q.shape
    hk = k.shape[1]
    qo = torch.empty((t, hq, d), dtype=q.dtype, device=q.device)
    ko = torch.empty((t, hk, d), dtype=k.dtype, device=k.device)
    if t:
        half = d // 2
        _rotary_kernel[(t,)](q, k, qo, ko, positions, cos, sin, q.stride(0), q.stride(1), k.stride(0), k.stride(1),
                             qo.stride(0), qo.stride(1), ko.stride(0), ko.stride(1), cos.stride(0), hq, hk,
                             HALF=half, BLOCK_HQ=triton.next_power_of_2(hq), BLOCK_HK=triton.next_power_of_2(hk),
                             BLOCK_D=triton.next_power_of_2(half), num_warps=4)
    return qo, ko
