"""Dream's `diffusion_generate`, one request, no cache, full logits.

The official loop runs `steps` steps over the whole generation with timesteps t_0 = 1 > ... >
t_steps = eps (float32 linspace). At step i, with n masked positions left:
- `origin`: each masked position independently gets its sampled token with probability
  1 - t_(i+1) / t_i (1 at the last step);
- the other algs: int(n * (1 - t_(i+1) / t_i)) positions (float32; all n at the last step), those
  with the highest score (or, with alg_temp > 0, drawn without replacement by score / alg_temp).
Tokens and scores as `dream_rows` computes them. Blocks generalise it: each block runs the same
schedule over its own positions with `steps / num_blocks` steps (one block = the official call);
with a threshold (Fast-dLLM's rule on Dream's score), every masked position of the block whose
score is >= threshold, and at least the best. A block whose positions are all committed before its
last step ends there (the official loop would run its remaining steps committing nothing).
"""

from __future__ import annotations

import torch

from backend.oracle.common import ReferenceOutput, best_first, dream_rows, finish, full_logits, stopped


def timesteps(steps: int, eps: float) -> torch.Tensor:
    return torch.linspace(1.0, eps, steps + 1, dtype=torch.float32)


def decode(model, x: torch.Tensor, prompt_len: int, p, stops: set[int]) -> ReferenceOutput:
    mask_id = model.config.mask_token_id
    out = ReferenceOutput(tokens=[], finish_reason="length", forwards=0)
    step = 0
    for b in range(p.num_blocks):
        lo, hi = prompt_len + b * p.block_length, prompt_len + (b + 1) * p.block_length
        steps = p.steps_per_block
        ts = None if steps is None else timesteps(steps, p.eps)
        i = 0
        while bool((x[lo:hi] == mask_id).any()):
            logits = full_logits(model, x)
            out.forwards += 1
            masked = (x[lo:hi] == mask_id).nonzero().squeeze(1) + lo
            tokens, score = dream_rows(logits[masked], masked, p, step, mask_id)
            last = ts is not None and i == steps - 1
            if p.threshold is not None:
                pick = best_first(score, max(1, int((score >= p.threshold).sum())))
            elif p.alg == "origin":
                share = 1.0 if last else float(1 - ts[i + 1] / ts[i])
                pick = [j for j in range(masked.numel()) if last or float(score[j]) < share]
            else:
                n = masked.numel()
                count = n if last else int(torch.tensor(float(n), dtype=torch.float32) * (1 - ts[i + 1] / ts[i]))
                pick = best_first(score, count)
            x[masked[pick]] = tokens[pick]
            out.history.append([int(masked[j]) - prompt_len for j in pick])
            out.committed_logits.update({int(masked[j]) - prompt_len: logits[masked[j]] for j in pick})
            step, i = step + 1, i + 1
            if not p.ignore_eos and stopped(x[prompt_len:].tolist(), mask_id, stops):
                return finish(out, x[prompt_len:].tolist(), mask_id, stops, "eos")
    return finish(out, x[prompt_len:].tolist(), mask_id, stops, "length")
