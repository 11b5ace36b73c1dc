"""RMSNorm, optionally fused with the residual add before it: one kernel instead of eight small ones.

`rms_norm_reference(x, weight, eps, residual)` is the PyTorch definition (the models' own RMSNorm
math); with `residual`, it returns `(norm(residual + x), residual + x)`. `rms_norm` is the Triton
kernel with the same contract (CUDA, or TRITON_INTERPRET=1).
"""

from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    if residual is not None:
        s = residual + x
        return rms_norm_reference(s, weight, eps), s
    dtype = x.dtype
    xf = x.float() if dtype in (torch.float16, torch.bfloat16) else x
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * xf.to(dtype)


if triton is not None:

    @triton.jit
    def _rms_norm_kernel(X, R, W, OUT, RES_OUT, s_x, s_r, s_o, s_ro, n, eps,
                         HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        ok = offs < n
        x = tl.load(X + row * s_x + offs, mask=ok, other=0.0)
        # Arithmetic in float32, rounded where PyTorch rounds (the residual sum, the normalised row,
        # the product with the weight): the same values as the eager ops.
        if HAS_RES:
            r = tl.load(R + row * s_r + offs, mask=ok, other=0.0)
            x = (r.to(tl.float32) + x.to(tl.float32)).to(x.dtype)
            tl.store(RES_OUT + row * s_ro + offs, x, mask=ok)
        xf = x.to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(xf * xf, 0) / n + eps)
        y = (xf * rstd).to(x.dtype)
        w = tl.load(W + offs, mask=ok, other=0.0)
        tl.store(OUT + row * s_o + offs, (w.to(tl.float32) * y.to(tl.float32)).to(OUT.dtype.element_ty), mask=ok)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, residual: torch.Tensor | None = None):
    n = x.shape[-1]
    x2 = x.reshape(-1, n)
    out = torch.empty_like(x2)
    res_out = torch.empty_like(x2) if residual is not None else out
    r2 = residual.reshape(-1, n) if residual is not None else x2
    rows = x2.shape[0]
    if rows:
        block = triton.next_power_of_2(n)
        _rms_norm_kernel[(rows,)](x2, r2, weight, out, res_out, x2.stride(0), r2.stride(0), out.stride(0),
                                  res_out.stride(0), n, eps, HAS_RES=residual is not None, BLOCK=block,
                                  num_warps=min(16, max(1, block // 256)))
    if residual is not None:
        return out.view(x.shape), res_out.view(x.shape)
    return out.view(x.shape)
