"""Fills the models' `fused` slots with the Triton kernels of `kernels/` (CUDA only): per layer, the
norms with their residual adds, rotary for queries and keys, and SwiGLU's activation become one
kernel each. The CPU, float64 and the tests' oracles keep the PyTorch code."""

from __future__ import annotations

import logging

from backend.models import DiffusionLM
from backend.models.layers import RMSNorm, Rotary, SwiGLU
from kernels import KERNEL_DTYPES

log = logging.getLogger(__name__)


def install(model: DiffusionLM) -> bool:
    """True when the kernels were installed (CUDA, a kernel dtype, triton importable)."""
    if model.device.type != "cuda" or model.dtype not in KERNEL_DTYPES:
        return False
    try:
        fill(model)
    except ImportError as e:  # no triton: the PyTorch layers are still correct
        log.warning("fused layers: %s; using the PyTorch layers", e)
        return False
    return True


def fill(model: DiffusionLM) -> None:
    """Set every slot, whatever the device (tests run the kernels under TRITON_INTERPRET=1)."""
    from kernels.rms_norm import rms_norm
    from kernels.rotary import rotary
    from kernels.swiglu import silu_mul

    for m in model.modules():
        if isinstance(m, RMSNorm):
            m.fused = rms_norm
        elif isinstance(m, Rotary):
            m.fused = rotary
        elif isinstance(m, SwiGLU):
            m.fused = silu_mul


def uninstall(model: DiffusionLM) -> bool:
    """Back to the PyTorch layers; returns False (no kernels), for symmetry with `install`."""
    for m in model.modules():
        if isinstance(m, (RMSNorm, Rotary, SwiGLU)):
            m.fused = None
    return False
