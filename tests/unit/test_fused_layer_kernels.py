"""The fused layer kernels (RMSNorm with residual add, rotary, SwiGLU activation) against their
PyTorch references, and a whole model with them installed against the plain model (the interpreter
on the CPU, CUDA on a GPU machine)."""

from __future__ import annotations

import pytest
import torch

from backend.engine.runner import fused_layers
from backend.models import PackedBatch, random_model
from backend.models.layers import Rotary
from kernels.paged_attention import triton
from kernels.rms_norm import rms_norm, rms_norm_reference
from kernels.rotary import rotary, rotary_reference
from kernels.swiglu import silu_mul, silu_mul_reference

pytestmark = pytest.mark.skipif(triton is None, reason="triton is not installed")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def _rand(gen, *shape, dtype):
    return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).to(DEVICE)


def _rel(a, b) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [64, 192, 100])
def test_rms_norm(dtype, n):
    gen = torch.Generator().manual_seed(n)
    x, res, w = _rand(gen, 7, n, dtype=dtype), _rand(gen, 7, n, dtype=dtype), _rand(gen, n, dtype=dtype)
    assert _rel(rms_norm(x, w, 1e-5), rms_norm_reference(x, w, 1e-5)) < TOL[dtype]
    out, s = rms_norm(x, w, 1e-6, residual=res)
    ref_out, ref_s = rms_norm_reference(x, w, 1e-6, residual=res)
    if DEVICE == "cuda" or dtype != torch.bfloat16:
        assert torch.equal(s, ref_s)  # the residual sum is one rounding of the same two numbers
    else:  # Triton 3.9's interpreter truncates float32 -> bf16 instead of rounding to nearest
        assert _rel(s, ref_s) < TOL[dtype]
    assert _rel(out, ref_out) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hq,hk,d", [(4, 4, 16), (6, 2, 32), (3, 1, 128)])
def test_rotary(dtype, hq, hk, d):
    gen = torch.Generator().manual_seed(hq * d)
    rot = Rotary(d, 10000.0, 64)
    cos, sin = rot._table(torch.device(DEVICE), dtype)
    qkv = _rand(gen, 9, (hq + 2 * hk) * d, dtype=dtype)  # q and k as strided views of one projection
    q = qkv[:, :hq * d].view(9, hq, d)
    k = qkv[:, hq * d:(hq + hk) * d].view(9, hk, d)
    pos = torch.randint(0, 64, (9,), generator=gen).to(DEVICE)
    got, ref = rotary(q, k, pos, cos, sin), rotary_reference(q, k, pos, cos, sin)
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape and _rel(a, b) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_silu_mul(dtype):
    gen = torch.Generator().manual_seed(3)
    gu = _rand(gen, 5, 2 * 96, dtype=dtype)
    assert _rel(silu_mul(gu), silu_mul_reference(gu)) < TOL[dtype]


@pytest.mark.parametrize("name", ["tiny-llada", "tiny-dream"])
def test_model_with_fused_layers_matches_plain_model(name):
    model = random_model(name, torch.float32, "cpu", seed=2).to(DEVICE)
    ids = torch.randint(0, 90, (20,), generator=torch.Generator().manual_seed(1)).to(DEVICE)
    batch = PackedBatch.contiguous([12, 8], DEVICE)
    plain = model(ids, batch)
    fused_layers.fill(model)  # what fused_layers.install does on CUDA
    assert _rel(model(ids, batch), plain) < 1e-5
    assert not fused_layers.uninstall(model) and _rel(model(ids, batch), plain) == 0
