"""Dream: a Qwen2-named checkpoint with QKV bias and shifted prediction (hidden i predicts token i+1)."""

from __future__ import annotations

from backend.models.checkpoint_names import TensorMap, gate_up_rows, qkv_rows
from backend.models.config_fields import DREAM_FIELDS, resolve
from backend.models.model_config import ModelConfig
from backend.models.qwen_names import common_hf

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
    out.update({"architectures": ["DreamModel"], "model_type": "Dream", **common_hf(cfg),
                "pad_token_id": cfg.pad_token_id})
    return out


def tensor_maps(cfg: ModelConfig, names: set[str] | None = None) -> list[TensorMap]:
    qkv = qkv_rows(cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim)
    gu = gate_up_rows(cfg.intermediate_size)
    maps = [TensorMap("model.embed_tokens.weight", "embed.weight"), TensorMap("model.norm.weight", "norm.weight")]
    if not cfg.tie_word_embeddings:
        maps.append(TensorMap("lm_head.weight", "lm_head.weight"))
    for i in range(cfg.num_layers):
        b, p = f"model.layers.{i}.", f"layers.{i}."
        maps += [TensorMap(b + "input_layernorm.weight", p + "attn_norm.weight"),
                 TensorMap(b + "post_attention_layernorm.weight", p + "mlp_norm.weight"),
                 TensorMap(b + "self_attn.o_proj.weight", p + "attn.o_proj.weight"),
                 TensorMap(b + "mlp.gate_proj.weight", p + "mlp.gate_up_proj.weight", gu["gate"]),
                 TensorMap(b + "mlp.up_proj.weight", p + "mlp.gate_up_proj.weight", gu["up"]),
                 TensorMap(b + "mlp.down_proj.weight", p + "mlp.down_proj.weight")]
        for s in ("weight", "bias"):
            maps += [TensorMap(b + f"self_attn.{x}_proj.{s}", p + f"attn.qkv_proj.{s}", qkv[x]) for x in "qkv"]
    return maps
