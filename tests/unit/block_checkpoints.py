"""Tiny SDAR / Fast-dLLM v2 checkpoints written by hand in the official layout (config keys as the
released config.json files spell them, tensors under the official names), and an independent float64
forward over those tensors with an explicit block-causal mask: the loader and the model are checked
against it, not against themselves."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

SDAR_CONFIG = {  # SDAR-1.7B-Chat's keys, tiny values
    "architectures": ["SDARForCausalLM"], "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig"},
    "attention_bias": False, "attention_dropout": 0.0, "attn_implementation": "flex_attention",
    "bos_token_id": 90, "eos_token_id": 90, "block_size": 4, "mask_token_id": 95, "ep_size": 1,
    "fuse_cross_entropy": True, "head_dim": 16, "hidden_act": "silu", "hidden_size": 40,
    "initializer_range": 0.02, "intermediate_size": 72, "max_position_embeddings": 256, "max_window_layers": 28,
    "micro_forward": False, "model_type": "sdar", "num_attention_heads": 4, "num_hidden_layers": 2,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
    "skip_checkpoint": False, "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "transformers_version": "4.52.4", "use_cache": False, "use_deepep": False, "use_sliding_window": False,
    "vocab_size": 96, "debug": False,
}
FAST_DLLM_CONFIG = {  # Fast_dLLM_v2's keys (Qwen2.5 + bd_size), tiny values
    "architectures": ["Fast_dLLM_QwenForCausalLM"], "model_type": "Fast_dLLM_Qwen",
    "auto_map": {"AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"}, "attention_dropout": 0.0,
    "bd_size": 8, "bos_token_id": 80, "eos_token_id": 81, "hidden_act": "silu", "hidden_size": 48,
    "initializer_range": 0.02, "intermediate_size": 80, "max_position_embeddings": 256, "max_window_layers": 21,
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_scaling": None, "rope_theta": 1000000.0, "sliding_window": 256, "tie_word_embeddings": True,
    "torch_dtype": "bfloat16", "transformers_version": "4.53.0", "use_cache": True, "use_sliding_window": False,
    "layer_types": ["full_attention", "full_attention"], "vocab_size": 84, "mask_token_id": 83,
}


def official_tensors(hf: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random float64 tensors under the official names for this config."""
    g = torch.Generator().manual_seed(seed)
    h, v, i = hf["hidden_size"], hf["vocab_size"], hf["intermediate_size"]
    nh, nkv = hf["num_attention_heads"], hf["num_key_value_heads"]
    d = hf.get("head_dim") or h // nh
    sdar = hf["model_type"] == "sdar"
    qkv_bias = hf.get("attention_bias", False) if sdar else True

    def r(*shape, norm=False):
        x = torch.randn(*shape, generator=g, dtype=torch.float64)
        return 1 + 0.1 * x if norm else 0.05 * x

    t = {"model.embed_tokens.weight": r(v, h), "model.norm.weight": r(h, norm=True)}
    if not hf["tie_word_embeddings"]:
        t["lm_head.weight"] = r(v, h)
    for n in range(hf["num_hidden_layers"]):
        b = f"model.layers.{n}."
        t |= {b + "input_layernorm.weight": r(h, norm=True), b + "post_attention_layernorm.weight": r(h, norm=True),
              b + "self_attn.q_proj.weight": r(nh * d, h), b + "self_attn.k_proj.weight": r(nkv * d, h),
              b + "self_attn.v_proj.weight": r(nkv * d, h), b + "self_attn.o_proj.weight": r(h, nh * d),
              b + "mlp.gate_proj.weight": r(i, h), b + "mlp.up_proj.weight": r(i, h),
              b + "mlp.down_proj.weight": r(h, i)}
        if qkv_bias:
            t |= {b + "self_attn.q_proj.bias": r(nh * d), b + "self_attn.k_proj.bias": r(nkv * d),
                  b + "self_attn.v_proj.bias": r(nkv * d)}
        if sdar and hf.get("attention_bias"):
            t[b + "self_attn.o_proj.bias"] = r(h)
        if sdar:
            t |= {b + "self_attn.q_norm.weight": r(d, norm=True), b + "self_attn.k_norm.weight": r(d, norm=True)}
    return t


def write(path: Path, hf: dict, seed: int = 0, **changes) -> dict[str, torch.Tensor]:
    hf = {**hf, **changes}
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf, indent=2))
    tensors = official_tensors(hf, seed)
    save_file({k: x.contiguous() for k, x in tensors.items()},
              str(path / "model.safetensors"))
    return tensors


def _rms(x, w, eps):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def reference_logits(hf: dict, t: dict[str, torch.Tensor], ids: list[int], block: int) -> torch.Tensor:
    """[L, vocab]: the forward written out from the official modelling code's math (float64), with the
    mask [i, j] = (j // block <= i // block); Fast-dLLM v2's logits shifted by one (row i predicts i+1,
    row 0 its own)."""
    h, nh, nkv = hf["hidden_size"], hf["num_attention_heads"], hf["num_key_value_heads"]
    d = hf.get("head_dim") or h // nh
    eps, sdar = hf["rms_norm_eps"], hf["model_type"] == "sdar"
    n = len(ids)
    x = t["model.embed_tokens.weight"][torch.tensor(ids)]
    inv = 1.0 / (float(hf["rope_theta"]) ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    ang = torch.outer(torch.arange(n, dtype=torch.float64), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(y):  # y [H, n, d]
        rot = torch.cat([-y[..., d // 2:], y[..., :d // 2]], -1)
        return y * cos + rot * sin

    blk = torch.arange(n) // block
    allowed = blk.unsqueeze(0) <= blk.unsqueeze(1)
    for layer in range(hf["num_hidden_layers"]):
        b = f"model.layers.{layer}.self_attn."
        y = _rms(x, t[f"model.layers.{layer}.input_layernorm.weight"], eps)

        def proj(name, y=y, b=b):
            out = y @ t[b + name + ".weight"].T
            return out + t[b + name + ".bias"] if b + name + ".bias" in t else out

        q, k, v = (proj(p).view(n, -1, d).transpose(0, 1) for p in ("q_proj", "k_proj", "v_proj"))
        if sdar:
            q, k = _rms(q, t[b + "q_norm.weight"], eps), _rms(k, t[b + "k_norm.weight"], eps)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
        scores = (q @ k.transpose(1, 2)) / math.sqrt(d)
        att = F.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v
        x = x + _o(att.transpose(0, 1).reshape(n, nh * d), t, b)
        m = f"model.layers.{layer}."
        y = _rms(x, t[m + "post_attention_layernorm.weight"], eps)
        x = x + (F.silu(y @ t[m + "mlp.gate_proj.weight"].T) * (y @ t[m + "mlp.up_proj.weight"].T)) \
            @ t[m + "mlp.down_proj.weight"].T
    x = _rms(x, t["model.norm.weight"], eps)
    head = t.get("lm_head.weight", t["model.embed_tokens.weight"])
    logits = x @ head.T
    return logits if sdar else torch.cat([logits[:1], logits[:-1]])


def _o(att, t, b):
    out = att @ t[b + "o_proj.weight"].T
    return out + t[b + "o_proj.bias"] if b + "o_proj.bias" in t else out
