"""Building blocks shared by LLaDA and Dream: RMSNorm, rotary embeddings, gated MLP, vocabulary head.

RMSNorm, Rotary and SwiGLU each have a `fused` slot: None runs the PyTorch code below (the CPU, the
tests' oracles); an engine on CUDA fills it with a Triton kernel of the same contract (`kernels/`),
so that a layer is a handful of launches instead of ~40. The models never import the kernels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.fused = None  # (x, weight, eps, residual=None) -> like forward / add_forward

    def add_forward(self, x: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(norm(residual + x), residual + x): the residual add before a norm, fused where a kernel is."""
        if self.fused is not None:
            return self.fused(x, self.weight, self.eps, residual)
        s = residual + x
        return self(s), s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x, self.weight, self.eps)
        # Normalise in float32 at least (both reference implementations do), then cast back.
        dtype = x.dtype
        xf = x.float() if dtype in (torch.float16, torch.bfloat16) else x
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)


class Rotary(nn.Module):
    """Rotate-half rotary embeddings (the layout of both LLaDA and Qwen2/Dream) at given positions."""

    def __init__(self, head_dim: int, theta: float, max_positions: int):
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.max_positions = max_positions
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self.fused = None  # (q, k, positions, cos, sin) -> (rotated q, rotated k)

    def _table(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # float64 tables for float64 models (exactness tests), float32 otherwise.
        tdtype = torch.float64 if dtype == torch.float64 else torch.float32
        key = (str(device), tdtype)
        if key not in self._cache:
            inv = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float64) / self.head_dim))
            ang = torch.outer(torch.arange(self.max_positions, dtype=torch.float64), inv)
            ang = torch.cat([ang, ang], dim=-1)
            self._cache[key] = (ang.cos().to(device, tdtype), ang.sin().to(device, tdtype))
        return self._cache[key]

    def pair(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys of one layer rotated at `positions` (one kernel where a fused one is set)."""
        if self.fused is not None:
            return self.fused(q, k, positions, *self._table(q.device, q.dtype))
        return self(q, positions), self(k, positions)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: [T, H, D], positions: [T]."""
        cos, sin = self._table(x.device, x.dtype)
        cos, sin = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
        xf = x.to(cos.dtype)
        half = self.head_dim // 2
        rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
        return (xf * cos + rotated * sin).to(x.dtype)


ACTIVATIONS = {"silu": F.silu, "gelu": F.gelu, "relu": F.relu}


class SwiGLU(nn.Module):
    """down(act(gate(x)) * up(x)); gate and up are one fused matrix [gate; up]. `act` is SiLU in the
    released models (SwiGLU proper); GELU (exact) and ReLU are the other gates the configs can name."""

    def __init__(self, hidden: int, intermediate: int, activation: str = "silu"):
        super().__init__()
        self.intermediate = intermediate
        self.activation = activation
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)
        self.fused = None  # ([.., 2I] gate_up) -> silu(gate) * up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        # The kernel computes SiLU only: another gate keeps the PyTorch code even where a kernel is set.
        if self.fused is not None and self.activation == "silu":
            return self.down_proj(self.fused(gate_up))
        gate, up = gate_up.split(self.intermediate, dim=-1)
        return self.down_proj(ACTIVATIONS[self.activation](gate) * up)


class VocabHead(nn.Module):
    """The output projection, kept apart from the transformer so that callers choose which rows to
    project (only rows being decoded, in budgeted chunks) instead of materialising all logits."""

    def __init__(self, hidden: int, vocab: int, tied_to: nn.Embedding | None = None, scale: float = 1.0):
        super().__init__()
        self.scale = scale  # LLaDA scale_logits; applied after the product, as the official model does
        # A list, so that a tied embedding is not registered (and saved) twice.
        self._tied = [tied_to] if tied_to is not None else []
        self.weight = None if tied_to is not None else nn.Parameter(torch.empty(vocab, hidden))

    @property
    def matrix(self) -> torch.Tensor:
        return self._tied[0].weight if self._tied else self.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden, self.matrix)
        return logits if self.scale == 1.0 else logits * self.scale
