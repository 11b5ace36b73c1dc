"""Building blocks shared by LLaDA and Dream: RMSNorm, rotary embeddings, SwiGLU MLP, vocabulary head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: [T, H, D], positions: [T]."""
        cos, sin = self._table(x.device, x.dtype)
        cos, sin = cos[positions].unsqueeze(1), sin[positions].unsqueeze(1)
        xf = x.to(cos.dtype)
        half = self.head_dim // 2
        rotated = torch.cat([-xf[..., half:], xf[..., :half]], dim=-1)
        return (xf * cos + rotated * sin).to(x.dtype)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)); gate and up are one fused matrix [gate; up]."""

    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.intermediate = intermediate
        self.gate_up_proj = nn.Linear(hidden, 2 * intermediate, bias=False)
        self.down_proj = nn.Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).split(self.intermediate, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class VocabHead(nn.Module):
    """The output projection, kept apart from the transformer so that callers choose which rows to
    project (only rows being decoded, in budgeted chunks) instead of materialising all logits."""

    def __init__(self, hidden: int, vocab: int, tied_to: nn.Embedding | None = None):
        super().__init__()
        # A list, so that a tied embedding is not registered (and saved) twice.
        self._tied = [tied_to] if tied_to is not None else []
        self.weight = None if tied_to is not None else nn.Parameter(torch.empty(vocab, hidden))

    @property
    def matrix(self) -> torch.Tensor:
        return self._tied[0].weight if self._tied else self.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.matrix)
