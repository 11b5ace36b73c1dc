"""Dream: a Qwen2-named checkpoint with QKV bias and shifted prediction (hidden i predicts token i+1)."""

from __future__ import annotations

from backend.models import qwen_names
from backend.models.checkpoint_names import TensorMap
from backend.models.config_fields import DREAM_FIELDS, resolve
from backend.models.model_config import ModelConfig

ACTIVATION_NAMES = {"swish": "silu"}  # transformers' alias


def config_from_hf(hf: dict) -> ModelConfig:
    """Our config from Dream's `config.json`, through `DREAM_FIELDS` (official defaults, refusals).

    The context is the config's `max_position_embeddings` (Dream-7B: 131,072; the engine sizes its
    page tables from it and checks each request against it; the K/V pool is sized by memory).
    """
    c = resolve(hf, DREAM_FIELDS, "Dream")
    n_heads = int(c["num_attention_heads"])
    eos = c["eos_token_id"]
    eos = eos[0] if isinstance(eos, list) else eos  # PretrainedConfig allows a list of end ids
    return ModelConfig(
        arch="dream",
        hidden_size=int(c["hidden_size"]),
        num_layers=int(c["num_hidden_layers"]),
        num_heads=n_heads,
        num_kv_heads=int(c["num_key_value_heads"] or n_heads),
        intermediate_size=int(c["intermediate_size"]),
        vocab_size=int(c["vocab_size"]),
        rope_theta=float(c["rope_theta"]),
        rms_norm_eps=float(c["rms_norm_eps"]),
        max_sequence_length=int(c["max_position_embeddings"]),
        qkv_bias=True,  # Dream's q/k/v projections always have a bias (Qwen2's layout)
        tie_word_embeddings=bool(c["tie_word_embeddings"]),
        logit_shift=1,
        activation=ACTIVATION_NAMES.get(c["hidden_act"], c["hidden_act"]),
        mask_token_id=int(c["mask_token_id"]),
        eos_token_id=int(eos),
        extra_stop_token_ids=[int(t) for t in c["extra_stop_token_ids"]],
        pad_token_id=None if c["pad_token_id"] is None else int(c["pad_token_id"]),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    if (cfg.embedding_scale, cfg.logit_scale, cfg.norm_weight_offset) != (1.0, 1.0, 0.0):
        raise ValueError("arch: Dream has no config field for embedding_scale, logit_scale or norm_weight_offset")
    out = {name: f.default for name, f in DREAM_FIELDS.items()}
    out.update({"architectures": ["DreamModel"], "model_type": "Dream", **qwen_names.common_hf(cfg),
                "pad_token_id": cfg.pad_token_id})
    return out


def tensor_maps(cfg: ModelConfig, names: set[str] | None = None) -> list[TensorMap]:
    # Qwen2's names; qkv_bias is always set for Dream, so the q/k/v biases are mapped too.
    return qwen_names.tensor_maps(cfg)
