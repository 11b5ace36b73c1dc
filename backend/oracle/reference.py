"""The oracle: LLaDA-style semi-autoregressive decoding of one request, no cache, full logits.

Deliberately simple and slow. The engine must reproduce its tokens exactly when it refreshes every
step with dense attention (greedy, and with temperature thanks to counter-based noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from backend.engine.denoise import contiguous_prefix, select_commits, transfer_schedule
from backend.engine.runner.sampling import pick_tokens
from backend.engine.sampling_params import SamplingParams
from backend.models import DiffusionLM, PackedBatch


@dataclass
class ReferenceOutput:
    tokens: list[int]  # generated ids; with an EOS stop, the ids before the first stop token
    finish_reason: str  # "eos" or "length"
    forwards: int  # model forwards (= denoising steps)
    # Per step, the generation offsets (0-based) committed in that step, in commit order.
    history: list[list[int]] = field(default_factory=list)
    full: list[int] = field(default_factory=list)  # the whole generation region at the end (masks included)


def full_logits(model: DiffusionLM, ids: torch.Tensor) -> torch.Tensor:
    """[L, vocab] logits for every position of one sequence, Dream's shift applied."""
    hidden = model(ids, PackedBatch.contiguous([ids.numel()], ids.device))
    rows = model.hidden_rows_for(torch.arange(ids.numel(), device=ids.device))
    return model.lm_head(hidden[rows])


@torch.no_grad()
def generate(model: DiffusionLM, prompt_ids: list[int], params: SamplingParams,
             stop_token_ids: list[int] | None = None) -> ReferenceOutput:
    cfg = model.config
    if not prompt_ids:
        raise ValueError("prompt: must contain at least one token")
    prompt_len, gen_len, block = len(prompt_ids), params.max_tokens, params.block_length
    if prompt_len + gen_len > cfg.max_sequence_length:
        raise ValueError(f"max_tokens: prompt ({prompt_len}) + max_tokens ({gen_len}) exceed the model's "
                         f"context of {cfg.max_sequence_length} positions")
    stops = set(cfg.stop_token_ids if stop_token_ids is None else stop_token_ids)
    mask_id = cfg.mask_token_id
    device = model.device
    x = torch.tensor(list(prompt_ids) + [mask_id] * gen_len, dtype=torch.long, device=device)
    out = ReferenceOutput(tokens=[], finish_reason="length", forwards=0)
    step = 0
    for b in range(params.num_blocks):
        start = prompt_len + b * block
        quotas = None if params.threshold is not None else transfer_schedule(block, params.steps_per_block)
        i = 0
        while bool((x[start:start + block] == mask_id).any()):
            logits = full_logits(model, x)
            out.forwards += 1
            masked = (x[start:start + block] == mask_id).nonzero().squeeze(1) + start
            tokens, conf = pick_tokens(logits[masked], masked, params.temperature, params.seed, step,
                                       params.remasking, mask_id)
            chosen = select_commits(conf, quota=None if quotas is None else quotas[i], threshold=params.threshold)
            x[masked[chosen]] = tokens[chosen]
            out.history.append([int(p) - prompt_len for p in masked[chosen]])
            step, i = step + 1, i + 1
            if not params.ignore_eos and _stopped(x[prompt_len:], mask_id, stops):
                return _finish(out, x[prompt_len:], mask_id, stops, "eos")
    return _finish(out, x[prompt_len:], mask_id, stops, "length")


def _stopped(gen: torch.Tensor, mask_id: int, stops: set[int]) -> bool:
    prefix = gen[:contiguous_prefix(gen == mask_id)].tolist()
    return any(t in stops for t in prefix)


def _finish(out: ReferenceOutput, gen: torch.Tensor, mask_id: int, stops: set[int], reason: str):
    out.full = gen.tolist()
    out.finish_reason = reason
    if reason == "eos":
        prefix = out.full[:contiguous_prefix(gen == mask_id)]
        out.tokens = prefix[:next(i for i, t in enumerate(prefix) if t in stops)]
    else:
        out.tokens = list(out.full)
    return out
