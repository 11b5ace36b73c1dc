"""SDAR (`SDARForCausalLM`): Qwen3 names and layout (per-head q/k RMSNorm, GQA, explicit head_dim), no
logit shift (the hidden state of position i predicts token i), block-causal attention."""

from __future__ import annotations

from backend.models import qwen_names
from backend.models.block_config_fields import SDAR_FIELDS
from backend.models.checkpoint_names import TensorMap
from backend.models.config_fields import resolve
from backend.models.model_config import ModelConfig


def config_from_hf(hf: dict) -> ModelConfig:
    c = resolve(hf, SDAR_FIELDS, "SDAR")
    bias = bool(c["attention_bias"])
    return ModelConfig(
        arch="sdar", **qwen_names.common_config(c),
        explicit_head_dim=None if c["head_dim"] is None else int(c["head_dim"]),
        qkv_bias=bias, attention_bias=bias, qk_norm=True, logit_shift=0, block_size=int(c["block_size"]),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    out = {name: f.default for name, f in SDAR_FIELDS.items()}
    out.update(qwen_names.common_hf(cfg))
    out.update({"architectures": ["SDARForCausalLM"], "model_type": "sdar", "head_dim": cfg.head_dim,
                "attention_bias": cfg.attention_bias, "block_size": cfg.block_size})
    return out


def tensor_maps(cfg: ModelConfig, names: set[str] | None = None) -> list[TensorMap]:
    return qwen_names.tensor_maps(cfg)
