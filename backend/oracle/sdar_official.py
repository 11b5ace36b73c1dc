"""SDAR's `block_diffusion_generate`, one request, with its K/V cache (or recomputing, `cached=False`).

Blocks of `block_length` aligned to absolute positions; the prompt's whole blocks are prefilled once
(block-causally) into the cache; then each block from the one holding the prompt's tail is denoised:
each step runs the block alone against the cache (store off), draws a token and its probability for
every masked row, and commits by `remasking`:
- low_confidence_static: the k most probable masked rows, k = the step's entry of the linear schedule
  of block_length over denoising_steps (remainder to the first steps);
- low_confidence_dynamic: every masked row whose probability is > threshold (strictly), when there are
  at least k of them; otherwise the k most probable;
- sequential: the first k masked rows.
When the block holds no mask, one extra forward of the block (store on) writes its K/V to the cache.
Departures, on purpose: k is capped at the rows still masked (the official topk over the block would
then also pick unmasked rows, rewriting a prompt token of the first block); a [MASK] is never
committed (common.choose); EOS ends the generation once it is committed in the contiguous prefix
(the official loop finishes the block first: the returned tokens are the same).
"""

from __future__ import annotations

import torch

from backend.oracle.block_common import Forwards, block_rows, geometry
from backend.oracle.common import ReferenceOutput, finish, stopped


def linear_quota(block: int, steps: int) -> list[int]:
    return [block // steps + (1 if i < block % steps else 0) for i in range(steps)]


def pick(conf: torch.Tensor, k: int, rule: str, threshold: float | None) -> list[int]:
    """Indices (into the masked rows, in position order) that this step commits."""
    n = conf.numel()
    k = min(k, n)
    if rule == "sequential":
        return list(range(k))
    if rule == "low_confidence_dynamic":
        high = [i for i in range(n) if float(conf[i]) > threshold]
        if len(high) >= k:
            return high
    return sorted(sorted(range(n), key=lambda i: (-float(conf[i]), i))[:k])


def decode(model, prompt_ids: list[int], p, stops: set[int], cached: bool = True) -> ReferenceOutput:
    mask_id = model.config.mask_token_id
    block, plen = p.block_length, len(prompt_ids)
    first, end = geometry(plen, p.max_tokens, block)
    x = torch.tensor(prompt_ids + [mask_id] * (end - plen), dtype=torch.long, device=model.device)
    out = ReferenceOutput(tokens=[], finish_reason="length", forwards=0)
    fw = Forwards(model, block, cached)
    if first > 0:
        fw.commit(x, 0, first * block)  # prefill: the prompt's whole blocks
    quota = linear_quota(block, p.denoising_steps)
    step = 0
    gen = lambda: x[plen:plen + p.max_tokens].tolist()  # noqa: E731
    for b in range(first, end // block):
        lo, hi = b * block, (b + 1) * block
        i = 0
        while bool((x[lo:hi] == mask_id).any()):
            logits = fw.denoise(x, lo, hi)
            masked = (x[lo:hi] == mask_id).nonzero().squeeze(1) + lo
            tokens, conf = block_rows(logits[masked - lo], masked, p, step, mask_id)
            chosen = pick(conf, quota[i], p.remasking, p.threshold)
            x[masked[chosen]] = tokens[chosen]
            out.history.append([int(masked[j]) - plen for j in chosen])
            step, i = step + 1, i + 1
            if not p.ignore_eos and stopped(gen(), mask_id, stops):
                out.forwards = fw.count
                return finish(out, gen(), mask_id, stops, "eos")
        if hi < end:
            fw.commit(x, lo, hi)  # the extra forward that writes the finished block's K/V
    out.forwards = fw.count
    return finish(out, gen(), mask_id, stops, "length")
