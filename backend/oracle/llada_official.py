"""LLaDA's `generate` (and Fast-dLLM's threshold decoding), one request, no cache, full logits.

Semi-autoregressive blocks; in each block `steps / num_blocks` steps, step i committing the i-th
entry of the linear schedule (the block's masks split evenly, the remainder to the first steps),
the most confident masked positions of the current block first; or, with a threshold, every masked
position of the block whose confidence is >= threshold, and always at least the most confident.
Confidence as `llada_rows` computes it (softmax of the raw logits, [MASK] included).
"""

from __future__ import annotations

import torch

from backend.oracle.common import ReferenceOutput, best_first, finish, full_logits, llada_rows, stopped


def linear_schedule(masked: int, steps: int) -> list[int]:
    """How many positions each step of a block commits: masked // steps each, plus one for the
    first masked % steps steps."""
    return [masked // steps + (1 if i < masked % steps else 0) for i in range(steps)]


def decode(model, x: torch.Tensor, prompt_len: int, p, stops: set[int]) -> ReferenceOutput:
    mask_id = model.config.mask_token_id
    out = ReferenceOutput(tokens=[], finish_reason="length", forwards=0)
    step = 0
    for b in range(p.num_blocks):
        lo, hi = prompt_len + b * p.block_length, prompt_len + (b + 1) * p.block_length
        quotas = None if p.threshold is not None else linear_schedule(p.block_length, p.steps_per_block)
        i = 0
        while bool((x[lo:hi] == mask_id).any()):
            logits = full_logits(model, x)
            out.forwards += 1
            masked = (x[lo:hi] == mask_id).nonzero().squeeze(1) + lo
            tokens, conf = llada_rows(logits[masked], masked, p, step, mask_id)
            if quotas is None:
                n = max(1, int((conf >= p.threshold).sum()))
            else:
                n = quotas[i]
            pick = best_first(conf, n)
            x[masked[pick]] = tokens[pick]
            out.history.append([int(masked[j]) - prompt_len for j in pick])
            out.committed_logits.update({int(masked[j]) - prompt_len: logits[masked[j]] for j in pick})
            step, i = step + 1, i + 1
            if not p.ignore_eos and stopped(x[prompt_len:].tolist(), mask_id, stops):
                return finish(out, x[prompt_len:].tolist(), mask_id, stops, "eos")
    return finish(out, x[prompt_len:].tolist(), mask_id, stops, "length")
