"""Model architectures (LLaDA, Dream; the block-diffusion SDAR and Fast-dLLM v2) in plain PyTorch,
their layers and attention contexts (bidirectional, block-causal), the model config (model_config.py:
presets at real and tiny sizes), checkpoint names, the Hugging Face loader and the tokenizer. Imports
nothing of the engine."""

from __future__ import annotations

import torch

from backend.models import dream, fast_dllm, llada, sdar
from backend.models.attention import AttentionContext, PackedBatch, varlen_attention
from backend.models.model_config import ModelConfig, preset
from backend.models.transformer import DiffusionLM, init_random_

ARCH_MODULES = {"llada": llada, "dream": dream, "sdar": sdar, "fast_dllm": fast_dllm}

__all__ = ["AttentionContext", "DiffusionLM", "PackedBatch", "build_model",
           "default_dtype", "random_model", "varlen_attention"]


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA, float32 elsewhere."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def build_model(cfg: ModelConfig, dtype: torch.dtype | None = None, device="cpu") -> DiffusionLM:
    """An uninitialised model (weights are whatever `torch.empty` gives) on `device`.

    Built on the meta device first so that real sizes allocate once, in the final dtype.
    """
    dtype = dtype or default_dtype(device)
    with torch.device("meta"):
        model = DiffusionLM(cfg)
    return model.to(dtype).to_empty(device=device).eval().requires_grad_(False)


def random_model(size: str | ModelConfig, dtype: torch.dtype | None = None, device="cpu",
                 seed: int = 0, **overrides) -> DiffusionLM:
    """Random weights at a named size (`llada-8b`, `dream-7b`, `tiny-llada`, `tiny-dream`) or a config."""
    cfg = preset(size, **overrides) if isinstance(size, str) else size.replace(**overrides)
    return init_random_(build_model(cfg, dtype, device), seed)
