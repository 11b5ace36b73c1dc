"""SwiGLU's activation, `silu(gate) * up` from the fused `[gate; up]` projection, in one kernel.

`silu_mul_reference` is the PyTorch definition (the models' own SwiGLU math); `silu_mul` the Triton
kernel: SiLU in float32, rounded to the input dtype, times `up` (the same roundings as PyTorch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover
    triton = None


def silu_mul_reference(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


if triton is not None:

    @triton.jit
    def _silu_mul_kernel(GU, O, s_g, s_o, n, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < n
        g = tl.load(GU + row * s_g + cols, mask=ok, other=0.0)
        u = tl.load(GU + row * s_g + n + cols, mask=ok, other=0.0)
        gf = g.to(tl.float32)
        act = (gf / (1.0 + tl.exp(-gf))).to(g.dtype)
        tl.store(O + row * s_o + cols, (act.to(tl.float32) * u.to(tl.float32)).to(O.dtype.element_ty), mask=ok)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    n = gate_up.shape[-1] // 2
    x = gate_up.reshape(-1, 2 * n)
    out = torch.empty((x.shape[0], n), dtype=x.dtype, device=x.device)
    if x.shape[0]:
        block = min(1024, triton.next_power_of_2(n))
        _silu_mul_kernel[(x.shape[0], triton.cdiv(n, block))](x, out, x.stride(0), out.stride(0), n, BLOCK=block,
                                                              num_warps=4)
    return out.view(*gate_up.shape[:-1], n)
