"""Fast-dLLM v2 (`Fast_dLLM_QwenForCausalLM`): Qwen2.5 names and layout (q/k/v bias, GQA), block-causal
attention over `bd_size` blocks, and the token shift: the hidden state of position i predicts token
i+1, as in the autoregressive model it was adapted from."""

from __future__ import annotations

from backend.models import qwen_names
from backend.models.block_config_fields import FAST_DLLM_FIELDS, check_layer_types
from backend.models.checkpoint_names import TensorMap
from backend.models.config_fields import resolve
from backend.models.model_config import ModelConfig


def config_from_hf(hf: dict) -> ModelConfig:
    c = resolve(hf, FAST_DLLM_FIELDS, "Fast-dLLM v2")
    check_layer_types(c["layer_types"], int(c["num_hidden_layers"]))
    return ModelConfig(arch="fast_dllm", **qwen_names.common_config(c), qkv_bias=True, logit_shift=1,
                       block_size=int(c["bd_size"]))


def config_to_hf(cfg: ModelConfig) -> dict:
    if cfg.explicit_head_dim not in (None, cfg.hidden_size // cfg.num_heads) or cfg.qk_norm or cfg.attention_bias:
        raise ValueError("arch: Fast-dLLM v2 has no config field for head_dim, qk_norm or attention_bias")
    out = {name: f.default for name, f in FAST_DLLM_FIELDS.items()}
    out.update(qwen_names.common_hf(cfg))
    out.update({"architectures": ["Fast_dLLM_QwenForCausalLM"], "model_type": "Fast_dLLM_Qwen",
                "bd_size": cfg.block_size, "layer_types": ["full_attention"] * cfg.num_layers})
    return out


def tensor_maps(cfg: ModelConfig, names: set[str] | None = None) -> list[TensorMap]:
    return qwen_names.tensor_maps(cfg)
