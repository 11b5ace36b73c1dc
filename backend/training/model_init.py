"""The model a training run starts from: random weights of the configured architecture, or a
checkpoint (`init_from`), possibly of another family.

A block-diffusion model (SDAR) can start from the bundled LLaDA-architecture model: the two share
every tensor but SDAR's per-head q/k norms (Qwen3), so the LLaDA weights are copied and each layer's
q/k norm weight is set to the root-mean-square its queries / keys had in the LLaDA model, which keeps
the attention logits near their old scale. The function is not the same (the norms remove each
vector's own length, and attention becomes block-causal); the block objective's fine-tune adapts it.
"""

from __future__ import annotations

import dataclasses
import math
import random

import torch

from backend.models import PackedBatch, build_model
from backend.models.loader import load_model
from backend.models.model_config import BLOCK_CAUSAL_ARCHITECTURES, ModelConfig
from backend.training import char_tokenizer, tasks


def model_config(cfg) -> ModelConfig:
    """The ModelConfig of a TrainConfig (LLaDA, or SDAR with its block size and q/k norms)."""
    ids = char_tokenizer.special_ids()
    block = cfg.arch in BLOCK_CAUSAL_ARCHITECTURES
    return ModelConfig(arch=cfg.arch, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                       num_heads=cfg.num_heads, num_kv_heads=cfg.num_heads,
                       intermediate_size=cfg.intermediate_size, vocab_size=char_tokenizer.build().get_vocab_size(),
                       rope_theta=cfg.rope_theta, max_sequence_length=cfg.max_sequence_length,
                       mask_token_id=ids["mask"], eos_token_id=ids["eos"], pad_token_id=ids["pad"],
                       qk_norm=cfg.arch == "sdar", block_size=cfg.block_size if block else 0)


def init_weights_(model, seed: int):
    """Fan-in scaled init (std 1/sqrt(fan_in); residual outputs shrunk by 1/sqrt(2 * layers)).

    The models' `init_random_` (std 0.02, for performance work) leaves attention almost uniform at
    this width: q.k logits start near 0.1 and retrieval-style heads take hundreds of steps to form.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
                continue
            std = 1.0 if name.startswith("embed") else p.shape[1] ** -0.5
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                std /= math.sqrt(2 * len(model.layers))
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def task_prompts(n: int = 64, seed: int = 0) -> list[list[int]]:
    """Token ids of `n` prompts of the training tasks."""
    tok, rng = char_tokenizer.build(), random.Random(seed)
    return [tok.encode(tasks.sample(t, rng, tasks.TaskConfig()).prompt).ids for t in tasks.TASKS
            for _ in range(n // len(tasks.TASKS))]


def qk_scales(model, ids: list[list[int]]) -> list[tuple[float, float]]:
    """Per layer, the RMS of the model's query and key head vectors over the sequences `ids`."""
    seen: list[tuple[float, float]] = []

    def recorder(attn):
        def hook(_qkv_proj, _inputs, qkv):
            q, k, _ = qkv.split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
            seen.append(tuple(float(x.reshape(-1, attn.head_dim).pow(2).mean().sqrt()) for x in (q, k)))
        return hook

    handles = [layer.attn.qkv_proj.register_forward_hook(recorder(layer.attn)) for layer in model.layers]
    with torch.no_grad():
        flat = torch.tensor([t for x in ids for t in x])
        model(flat, PackedBatch.contiguous([len(x) for x in ids]))
    for h in handles:
        h.remove()
    return seen


def convert(source, want: ModelConfig, calibration: list[list[int]] | None = None):
    """A model of config `want` holding `source`'s weights (same shapes), q/k norms calibrated on
    `calibration` (default: task prompts)."""
    model = build_model(want, torch.float32)
    missing, unexpected = model.load_state_dict(source.state_dict(), strict=False)
    if unexpected or any(not n.endswith(("q_norm.weight", "k_norm.weight")) for n in missing):
        raise ValueError(f"init_from: cannot convert {source.config.arch} to {want.arch} "
                         f"(missing {missing}, unexpected {unexpected})")
    if want.qk_norm and not source.config.qk_norm:
        with torch.no_grad():
            for layer, (q, k) in zip(model.layers, qk_scales(source, calibration or task_prompts()), strict=True):
                layer.attn.q_norm.weight.fill_(q)
                layer.attn.k_norm.weight.fill_(k)
    return model


def build(cfg, device: torch.device):
    want = model_config(cfg)
    if cfg.init_from:
        model = load_model(cfg.init_from, dtype=torch.float32)
        # What may differ: the family (converted), the context (RoPE has no learnt positions), and what
        # an SDAR config.json does not keep (pad id) or states explicitly (head_dim).
        same_shape = dict(arch=want.arch, max_sequence_length=want.max_sequence_length, qk_norm=want.qk_norm,
                          block_size=want.block_size, pad_token_id=want.pad_token_id,
                          explicit_head_dim=want.explicit_head_dim)
        if model.config.head_dim != want.head_dim or dataclasses.replace(model.config, **same_shape) != want:
            raise ValueError(f"init_from: {cfg.init_from} has other sizes or token ids than this config")
        if model.config != want:  # another family, or only the context (RoPE has no learnt positions)
            model = convert(model, want)
    else:
        # Initialised on the host with a host generator: the same weights whatever the device.
        model = init_weights_(build_model(want, torch.float32), cfg.seed)
    return model.to(device).train().requires_grad_(True)
