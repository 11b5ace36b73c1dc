"""Dream: a Qwen2-named checkpoint with QKV bias and shifted prediction (hidden i predicts token i+1)."""

from __future__ import annotations

from backend.models.checkpoint_names import TensorMap, gate_up_rows, qkv_rows
from backend.models.model_config import ModelConfig

# Dream-7B is trained at 2,048 positions although its config advertises Qwen2's 131,072.
USABLE_CONTEXT = 2048


def config_from_hf(hf: dict) -> ModelConfig:
    def need(key):
        if key not in hf:
            raise ValueError(f"config.json: Dream config lacks {key!r}")
        return hf[key]

    n_heads = int(need("num_attention_heads"))
    eos = hf.get("eos_token_id", 151643)
    eos = int(eos[0] if isinstance(eos, list) else eos)
    return ModelConfig(
        arch="dream",
        hidden_size=int(need("hidden_size")),
        num_layers=int(need("num_hidden_layers")),
        num_heads=n_heads,
        num_kv_heads=int(hf.get("num_key_value_heads") or n_heads),
        intermediate_size=int(need("intermediate_size")),
        vocab_size=int(need("vocab_size")),
        rope_theta=float(hf.get("rope_theta", 1000000.0)),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        max_sequence_length=int(hf.get("max_sequence_length",
                                       min(int(hf.get("max_position_embeddings", USABLE_CONTEXT)), USABLE_CONTEXT))),
        qkv_bias=True,
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        logit_shift=1,
        mask_token_id=int(hf.get("mask_token_id", 151666)),
        eos_token_id=eos,
        extra_stop_token_ids=[int(t) for t in hf.get("extra_stop_token_ids", [])],
        pad_token_id=hf.get("pad_token_id"),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    return {
        "architectures": ["DreamModel"],
        "model_type": "Dream",
        "hidden_act": "silu",
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "num_hidden_layers": cfg.num_layers,
        "vocab_size": cfg.vocab_size,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_position_embeddings": cfg.max_sequence_length,
        "max_sequence_length": cfg.max_sequence_length,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "mask_token_id": cfg.mask_token_id,
        "eos_token_id": cfg.eos_token_id,
        "extra_stop_token_ids": cfg.extra_stop_token_ids,
        "pad_token_id": cfg.pad_token_id,
    }


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
