"""Qwen2 / Qwen3 parameter names (`model.layers.N.self_attn.q_proj.weight`, ...), shared by SDAR and
Fast-dLLM v2, and the token ids both read the same way."""

from __future__ import annotations

from backend.models.checkpoint_names import TensorMap, gate_up_rows, qkv_rows
from backend.models.model_config import ModelConfig


def stop_ids(eos, extra) -> tuple[int, list[int]]:
    """(EOS, other stop ids): a list-valued eos_token_id keeps its first id as EOS, the rest stop too."""
    ids = [int(t) for t in eos] if isinstance(eos, list) else [int(eos)]
    if not ids:
        raise ValueError("eos_token_id: an empty list (generation needs an end token)")
    return ids[0], [*ids[1:], *(int(t) for t in extra if int(t) not in ids)]


def tensor_maps(cfg: ModelConfig) -> list[TensorMap]:
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
        for s in ("weight", "bias") if cfg.qkv_bias else ("weight",):
            maps += [TensorMap(b + f"self_attn.{x}_proj.{s}", p + f"attn.qkv_proj.{s}", qkv[x]) for x in "qkv"]
        if cfg.attention_bias:
            maps.append(TensorMap(b + "self_attn.o_proj.bias", p + "attn.o_proj.bias"))
        if cfg.qk_norm:
            maps += [TensorMap(b + "self_attn.q_norm.weight", p + "attn.q_norm.weight"),
                     TensorMap(b + "self_attn.k_norm.weight", p + "attn.k_norm.weight")]
    return maps


def common_hf(cfg: ModelConfig) -> dict:
    """The Qwen2/Qwen3 fields every Qwen-based config.json carries (Dream, SDAR, Fast-dLLM v2), from our config."""
    return {
        "hidden_act": cfg.activation,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "num_hidden_layers": cfg.num_layers,
        "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_sequence_length,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "mask_token_id": cfg.mask_token_id,
        "eos_token_id": cfg.eos_token_id,
        "extra_stop_token_ids": cfg.extra_stop_token_ids,
    }


def common_config(c: dict) -> dict:
    """Our config's keyword arguments from the Qwen fields both families resolve the same way."""
    n_heads = int(c["num_attention_heads"])
    eos, extra = stop_ids(c["eos_token_id"], c["extra_stop_token_ids"])
    acts = {"swish": "silu"}
    return dict(
        hidden_size=int(c["hidden_size"]), num_layers=int(c["num_hidden_layers"]), num_heads=n_heads,
        num_kv_heads=int(c["num_key_value_heads"] or n_heads), intermediate_size=int(c["intermediate_size"]),
        vocab_size=int(c["vocab_size"]), rope_theta=float(c["rope_theta"]), rms_norm_eps=float(c["rms_norm_eps"]),
        max_sequence_length=int(c["max_position_embeddings"]), tie_word_embeddings=bool(c["tie_word_embeddings"]),
        activation=acts.get(c["hidden_act"], c["hidden_act"]), mask_token_id=int(c["mask_token_id"]),
        eos_token_id=eos, extra_stop_token_ids=extra,
    )
