"""LLaDA: Hugging Face config keys and parameter names (`model.transformer.*`)."""

from __future__ import annotations

from backend.models.checkpoint_names import TensorMap, gate_up_rows, qkv_rows
from backend.models.model_config import ModelConfig


def config_from_hf(hf: dict) -> ModelConfig:
    def need(key):
        if key not in hf:
            raise ValueError(f"config.json: LLaDA config lacks {key!r}")
        return hf[key]

    n_heads = int(need("n_heads"))
    eos = int(hf.get("eos_token_id", 126081))
    return ModelConfig(
        arch="llada",
        hidden_size=int(need("d_model")),
        num_layers=int(need("n_layers")),
        num_heads=n_heads,
        num_kv_heads=int(hf.get("n_kv_heads") or n_heads),
        intermediate_size=int(need("mlp_hidden_size")),
        vocab_size=int(hf.get("embedding_size") or need("vocab_size")),
        rope_theta=float(hf.get("rope_theta", 10000.0)),
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
        max_sequence_length=int(hf.get("max_sequence_length", 4096)),
        qkv_bias=bool(hf.get("include_qkv_bias", False) or hf.get("include_bias", False)),
        tie_word_embeddings=bool(hf.get("weight_tying", False)),
        logit_shift=0,
        mask_token_id=int(hf.get("mask_token_id", 126336)),
        eos_token_id=eos,
        extra_stop_token_ids=[int(t) for t in hf.get("extra_stop_token_ids", [])],
        pad_token_id=hf.get("pad_token_id"),
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    return {
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "block_type": "llama",
        "activation_type": "silu",
        "layer_norm_type": "rms",
        "rope": True,
        "alibi": False,
        "attention_layer_norm": False,
        "include_bias": False,
        "include_qkv_bias": cfg.qkv_bias,
        "d_model": cfg.hidden_size,
        "n_heads": cfg.num_heads,
        "n_kv_heads": cfg.num_kv_heads,
        "n_layers": cfg.num_layers,
        "mlp_hidden_size": cfg.intermediate_size,
        "vocab_size": cfg.vocab_size,
        "embedding_size": cfg.vocab_size,
        "rope_theta": cfg.rope_theta,
        "rms_norm_eps": cfg.rms_norm_eps,
        "max_sequence_length": cfg.max_sequence_length,
        "weight_tying": cfg.tie_word_embeddings,
        "mask_token_id": cfg.mask_token_id,
        "eos_token_id": cfg.eos_token_id,
        "extra_stop_token_ids": cfg.extra_stop_token_ids,
        "pad_token_id": cfg.pad_token_id,
    }


def tensor_maps(cfg: ModelConfig, names: set[str] | None = None) -> list[TensorMap]:
    """The maps for the split layout of LLaDA-8B; a fused `att_proj` (OLMo style) is taken instead
    of q/k/v where the checkpoint has it."""
    names = names or set()
    qkv = qkv_rows(cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim)
    gu = gate_up_rows(cfg.intermediate_size)
    maps = [TensorMap("model.transformer.wte.weight", "embed.weight"),
            TensorMap("model.transformer.ln_f.weight", "norm.weight")]
    if not cfg.tie_word_embeddings:
        maps.append(TensorMap("model.transformer.ff_out.weight", "lm_head.weight"))
    for i in range(cfg.num_layers):
        b, p = f"model.transformer.blocks.{i}.", f"layers.{i}."
        maps += [TensorMap(b + "attn_norm.weight", p + "attn_norm.weight"),
                 TensorMap(b + "ff_norm.weight", p + "mlp_norm.weight"),
                 TensorMap(b + "attn_out.weight", p + "attn.o_proj.weight"),
                 TensorMap(b + "ff_proj.weight", p + "mlp.gate_up_proj.weight", gu["gate"]),
                 TensorMap(b + "up_proj.weight", p + "mlp.gate_up_proj.weight", gu["up"]),
                 TensorMap(b + "ff_out.weight", p + "mlp.down_proj.weight")]
        suffixes = ["weight", "bias"] if cfg.qkv_bias else ["weight"]
        for s in suffixes:
            if b + f"att_proj.{s}" in names:
                maps.append(TensorMap(b + f"att_proj.{s}", p + f"attn.qkv_proj.{s}"))
            else:
                maps += [TensorMap(b + f"{x}_proj.{s}", p + f"attn.qkv_proj.{s}", qkv[x]) for x in "qkv"]
    return maps
