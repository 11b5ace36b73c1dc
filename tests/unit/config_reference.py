"""(Test helper) Checkpoints written straight from a Hugging Face config dict, and the logits the
official LLaDA / Dream models compute from them, as a direct float64 PyTorch computation.

Independent of `backend.models`: shapes and semantics are read here from the config keys as the
official modeling code uses them (LLaDA's llama block; Dream's Qwen2-style layers), so a loader that
drops or misreads a field disagrees with this computation.
"""

from __future__ import annotations

import json
import math

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ACT = {"silu": F.silu, "swish": F.silu, "gelu": F.gelu, "relu": F.relu}


def _llada_dims(hf: dict) -> dict:
    d, heads = hf["d_model"], hf["n_heads"]
    kv = hf.get("n_kv_heads")
    if kv is None:
        kv = 1 if hf.get("multi_query_attention") else heads
    rows = hf.get("embedding_size") or hf["vocab_size"]
    inter = hf.get("mlp_hidden_size") or hf.get("mlp_ratio", 4) * d
    return dict(d=d, heads=heads, kv=kv, layers=hf["n_layers"], inter=inter, rows=rows,
                tied=hf.get("weight_tying", True), bias=hf.get("include_qkv_bias", False))


def _dream_dims(hf: dict) -> dict:
    heads = hf["num_attention_heads"]
    return dict(d=hf["hidden_size"], heads=heads, kv=hf.get("num_key_value_heads") or heads,
                layers=hf["num_hidden_layers"], inter=hf["intermediate_size"], rows=hf["vocab_size"],
                tied=hf.get("tie_word_embeddings", False), bias=True)


def _names(family: str) -> dict:
    if family == "llada":
        b = "model.transformer.blocks.{i}."
        return dict(embed="model.transformer.wte.weight", final_norm="model.transformer.ln_f.weight",
                    head="model.transformer.ff_out.weight", attn_norm=b + "attn_norm.weight",
                    mlp_norm=b + "ff_norm.weight", q=b + "q_proj", k=b + "k_proj", v=b + "v_proj",
                    o=b + "attn_out.weight", gate=b + "ff_proj.weight", up=b + "up_proj.weight",
                    down=b + "ff_out.weight")
    b = "model.layers.{i}."
    return dict(embed="model.embed_tokens.weight", final_norm="model.norm.weight", head="lm_head.weight",
                attn_norm=b + "input_layernorm.weight", mlp_norm=b + "post_attention_layernorm.weight",
                q=b + "self_attn.q_proj", k=b + "self_attn.k_proj", v=b + "self_attn.v_proj",
                o=b + "self_attn.o_proj.weight", gate=b + "mlp.gate_proj.weight", up=b + "mlp.up_proj.weight",
                down=b + "mlp.down_proj.weight")


def dims(family: str, hf: dict) -> dict:
    return _llada_dims(hf) if family == "llada" else _dream_dims(hf)


def random_tensors(family: str, hf: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every tensor the config implies, under the official names, float64."""
    g, n, s = torch.Generator().manual_seed(seed), _names(family), dims(family, hf)
    hd = s["d"] // s["heads"]

    def w(*shape):
        return 0.3 * torch.randn(*shape, generator=g, dtype=torch.float64)

    def norm():
        return 1.0 + 0.2 * torch.randn(s["d"], generator=g, dtype=torch.float64)

    t = {n["embed"]: w(s["rows"], s["d"]), n["final_norm"]: norm()}
    if not s["tied"]:
        t[n["head"]] = w(s["rows"], s["d"])
    for i in range(s["layers"]):
        def name(key, i=i):
            return n[key].format(i=i)
        t[name("attn_norm")], t[name("mlp_norm")] = norm(), norm()
        for key, rows in (("q", s["heads"] * hd), ("k", s["kv"] * hd), ("v", s["kv"] * hd)):
            t[name(key) + ".weight"] = w(rows, s["d"])
            if s["bias"]:
                t[name(key) + ".bias"] = w(rows)
        t[name("o")] = w(s["d"], s["heads"] * hd)
        t[name("gate")], t[name("up")] = w(s["inter"], s["d"]), w(s["inter"], s["d"])
        t[name("down")] = w(s["d"], s["inter"])
    return t


def write_checkpoint(path, family: str, hf: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(hf))
    tensors = random_tensors(family, hf, seed)
    save_file(tensors, str(path / "model.safetensors"))
    return tensors


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """x [T, H, D] rotated (halves rotated, as both official models) at positions 0..T-1."""
    half = x.shape[-1] // 2
    inv = 1.0 / theta ** (torch.arange(0, half, dtype=torch.float64) * 2 / x.shape[-1])
    ang = torch.arange(x.shape[0], dtype=torch.float64)[:, None] * inv
    cos, sin = torch.cat([ang.cos()] * 2, -1)[:, None], torch.cat([ang.sin()] * 2, -1)[:, None]
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def reference_logits(family: str, hf: dict, t: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Logits [T, rows] of one sequence, bidirectional attention, computed as the official model does."""
    n, s = _names(family), dims(family, hf)
    llada = family == "llada"
    eps = hf.get("rms_norm_eps", 1e-5 if llada else 1e-6)
    theta = hf.get("rope_theta", 10000.0)
    act = ACT[hf.get("activation_type", "swiglu") if llada else hf.get("hidden_act", "silu")]
    gemma = llada and hf.get("layer_norm_type") == "gemma_rms"
    hd = s["d"] // s["heads"]

    def norm(x, weight):
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return x * (1 + weight) if gemma else x * weight

    def lin(x, name):
        return F.linear(x, t[name + ".weight"], t.get(name + ".bias"))

    x = t[n["embed"]][ids]
    if llada and hf.get("input_emb_norm"):
        x = x * math.sqrt(s["d"])
    for i in range(s["layers"]):
        def name(key, i=i):
            return n[key].format(i=i)
        h = norm(x, t[name("attn_norm")])
        q = _rope(lin(h, name("q")).view(len(ids), s["heads"], hd), theta)
        k = _rope(lin(h, name("k")).view(len(ids), s["kv"], hd), theta)
        v = lin(h, name("v")).view(len(ids), s["kv"], hd)
        k, v = (z.repeat_interleave(s["heads"] // s["kv"], dim=1) for z in (k, v))
        p = torch.softmax(torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(hd), dim=-1)
        x = x + F.linear(torch.einsum("hqk,khd->qhd", p, v).reshape(len(ids), -1), t[name("o")])
        h = norm(x, t[name("mlp_norm")])
        x = x + F.linear(act(F.linear(h, t[name("gate")])) * F.linear(h, t[name("up")]), t[name("down")])
    logits = F.linear(norm(x, t[n["final_norm"]]), t[n["embed"]] if s["tied"] else t[n["head"]])
    if llada and hf.get("scale_logits"):
        logits = logits * (1 / math.sqrt(s["d"]))
    return logits
