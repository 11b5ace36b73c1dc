"""The oracle: each model family's official decoder, one request, no cache, full logits.

LLaDA (`llada_official.py`): LLaDA's `generate` and Fast-dLLM's threshold rule. Dream
(`dream_official.py`): Dream's `diffusion_generate` with every alg. SDAR (`sdar_official.py`):
`block_diffusion_generate`; Fast-dLLM v2 (`fast_dllm_official.py`): `batch_sample`, both with their
exact block cache. The row rules (tokens and confidence) are in `common.py`. Deliberately simple
and slow, written from the official code's behaviour; the engine must reproduce its tokens exactly
when it refreshes every step with dense attention (greedy, and with temperature thanks to
counter-based noise, which stands for the official torch.rand draws).
"""

from __future__ import annotations

import torch

from backend.engine.sampling_params import SamplingParams
from backend.models import DiffusionLM
from backend.oracle import dream_official, fast_dllm_official, llada_official, sdar_official
from backend.oracle.common import ReferenceOutput, full_logits

__all__ = ["ReferenceOutput", "full_logits", "generate"]


@torch.no_grad()
def generate(model: DiffusionLM, prompt_ids: list[int], params: SamplingParams,
             stop_token_ids: list[int] | None = None) -> ReferenceOutput:
    cfg = model.config
    if not prompt_ids:
        raise ValueError("prompt: must contain at least one token")
    prompt_len, gen_len = len(prompt_ids), params.max_tokens
    if prompt_len + gen_len > cfg.max_sequence_length:
        raise ValueError(f"max_tokens: prompt ({prompt_len}) + max_tokens ({gen_len}) exceed the model's "
                         f"context of {cfg.max_sequence_length} positions")
    params = params.for_family(cfg.arch)
    stops = set(cfg.stop_token_ids if stop_token_ids is None else stop_token_ids)
    if cfg.block_causal:  # SDAR / Fast-dLLM v2: their own loops with the exact block cache
        block_family = sdar_official if cfg.arch == "sdar" else fast_dllm_official
        return block_family.decode(model, list(prompt_ids), params, stops)
    x = torch.tensor(list(prompt_ids) + [cfg.mask_token_id] * gen_len, dtype=torch.long, device=model.device)
    family = dream_official if cfg.arch == "dream" else llada_official
    return family.decode(model, x, prompt_len, params, stops)
