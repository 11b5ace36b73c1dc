"""LLaDA: Hugging Face config keys and parameter names (`model.transformer.*`)."""

from __future__ import annotations

import math

from backend.models.checkpoint_names import TensorMap, gate_up_rows, qkv_rows
from backend.models.config_fields import LLADA_FIELDS, resolve
from backend.models.model_config import ModelConfig


def config_from_hf(hf: dict) -> ModelConfig:
    """Our config from LLaDA's `config.json`, through `LLADA_FIELDS` (official defaults, refusals)."""
    c = resolve(hf, LLADA_FIELDS, "LLaDA")
    d_model, n_heads = int(c["d_model"]), int(c["n_heads"])
    return ModelConfig(
        arch="llada",
        hidden_size=d_model,
        num_layers=int(c["n_layers"]),
        num_heads=n_heads,
        num_kv_heads=_kv_heads(c["n_kv_heads"], c["multi_query_attention"], n_heads),
        intermediate_size=int(c["mlp_hidden_size"] or c["mlp_ratio"] * d_model),
        vocab_size=_rows(c["vocab_size"], c["embedding_size"]),
        rope_theta=float(c["rope_theta"]),
        rms_norm_eps=float(c["rms_norm_eps"]),
        max_sequence_length=int(c["max_sequence_length"]),
        qkv_bias=bool(c["include_qkv_bias"]),
        tie_word_embeddings=bool(c["weight_tying"]),
        logit_shift=0,
        activation=c["activation_type"],
        embedding_scale=math.sqrt(d_model) if c["input_emb_norm"] else 1.0,
        logit_scale=1 / math.sqrt(d_model) if c["scale_logits"] else 1.0,
        norm_weight_offset=1.0 if c["layer_norm_type"] == "gemma_rms" else 0.0,
        mask_token_id=int(c["mask_token_id"]),
        eos_token_id=int(c["eos_token_id"]),
        extra_stop_token_ids=[int(t) for t in c["extra_stop_token_ids"]],
        pad_token_id=None if c["pad_token_id"] is None else int(c["pad_token_id"]),
    )


def _kv_heads(n_kv_heads, multi_query, n_heads: int) -> int:
    """The official effective_n_kv_heads: multi_query_attention True means 1 head, False n_heads; set
    together with n_kv_heads, the two must agree."""
    implied = None if multi_query is None else (1 if multi_query else n_heads)
    if n_kv_heads is None:
        return implied or n_heads
    if implied is not None and int(n_kv_heads) != implied:
        raise ValueError(f"multi_query_attention {multi_query!r} contradicts n_kv_heads {n_kv_heads}")
    return int(n_kv_heads)


def _rows(vocab_size, embedding_size) -> int:
    """Embedding (and output) rows: embedding_size, padded past vocab_size, or vocab_size when None."""
    if embedding_size is None:
        return int(vocab_size)
    if int(embedding_size) < int(vocab_size):
        raise ValueError(f"embedding_size {embedding_size} is smaller than vocab_size {vocab_size}")
    return int(embedding_size)


def config_to_hf(cfg: ModelConfig) -> dict:
    """Every field of the official class, so that the file reads the same under any default."""
    if cfg.embedding_scale not in (1.0, math.sqrt(cfg.hidden_size)) or cfg.logit_scale not in (
            1.0, 1 / math.sqrt(cfg.hidden_size)) or cfg.norm_weight_offset not in (0.0, 1.0):
        raise ValueError("embedding_scale / logit_scale / norm_weight_offset: no LLaDA config field has this value")
    out = {name: f.default for name, f in LLADA_FIELDS.items()}
    out.update({
        "architectures": ["LLaDAModelLM"],
        "model_type": "llada",
        "block_type": "llama",
        "activation_type": cfg.activation,
        "layer_norm_type": "gemma_rms" if cfg.norm_weight_offset == 1.0 else "rms",
        "rope": True,
        "attention_dropout": 0.0, "residual_dropout": 0.0, "embedding_dropout": 0.0,
        "include_qkv_bias": cfg.qkv_bias,
        "bias_for_layer_norm": False,
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
        "input_emb_norm": cfg.embedding_scale != 1.0,
        "scale_logits": cfg.logit_scale != 1.0,
        "mask_token_id": cfg.mask_token_id,
        "eos_token_id": cfg.eos_token_id,
        "extra_stop_token_ids": cfg.extra_stop_token_ids,
        "pad_token_id": cfg.pad_token_id,
    })
    return out


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
