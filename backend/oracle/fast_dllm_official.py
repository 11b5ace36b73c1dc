"""Fast-dLLM v2's `batch_sample`, one request, with its K/V cache (or recomputing, `cached=False`).

Blocks of `block_length` (bd_size) aligned to absolute positions. The prompt's whole blocks are
prefilled once into the cache; when the prompt ends on a block boundary, the prefill's last row
predicts the next token (argmax, the autoregressive way). Each block is decoded sub-block by sub-block
(`sub_block_length`, the official small_block_size), in order: while the current sub-block holds a
mask, the whole block runs against the cache (not stored), logits shifted by one (row q is predicted
by the hidden state of q - 1), a token and its probability are drawn for the sub-block's masked rows,
and every one whose probability is > threshold (strictly) is committed, and always the most probable.
A finished block is run once more with its K/V stored, and its last row's argmax is the first token of
the next block (so a block's first position is never masked while it is denoised).
Departures, on purpose: a prompt of exactly one block is prefilled like any longer one (the official
loop skips the prefill when the prompt is not longer than a block, and then denoises the next block
without the prompt in its context); the region ends at the first block boundary past prompt +
max_tokens (the official count rounds max_new_tokens down to whole blocks); a [MASK] is never
committed; EOS ends the generation once it is committed in the contiguous prefix.
"""

from __future__ import annotations

import torch

from backend.oracle.block_common import Forwards, block_rows, geometry
from backend.oracle.common import ReferenceOutput, finish, stopped


def pick(conf: torch.Tensor, threshold: float) -> list[int]:
    best = max(range(conf.numel()), key=lambda i: (float(conf[i]), -i))  # argmax: the first of equals
    return sorted({best} | {i for i in range(conf.numel()) if float(conf[i]) > threshold})


def decode(model, prompt_ids: list[int], p, stops: set[int], cached: bool = True) -> ReferenceOutput:
    mask_id = model.config.mask_token_id
    block, sub, plen = p.block_length, p.sub_block_length, len(prompt_ids)
    first, end = geometry(plen, p.max_tokens, block)
    x = torch.tensor(prompt_ids + [mask_id] * (end - plen), dtype=torch.long, device=model.device)
    out = ReferenceOutput(tokens=[], finish_reason="length", forwards=0)
    fw = Forwards(model, block, cached)
    gen = lambda: x[plen:plen + p.max_tokens].tolist()  # noqa: E731

    def next_token(lo: int, hi: int) -> bool:
        """Commit [lo, hi) and put its prediction at hi; True when that ends the generation."""
        logits = fw.next_token_logits(x, lo, hi)
        x[hi] = block_rows(logits, torch.tensor([hi]), p, 0, mask_id, greedy=True)[0][0]
        out.history.append([hi - plen])
        return not p.ignore_eos and stopped(gen(), mask_id, stops)

    if first > 0:
        if plen % block == 0:
            if next_token(0, plen):
                return _done(out, fw, gen(), mask_id, stops, "eos")
        else:
            fw.commit(x, 0, first * block)
    step = 0
    for b in range(first, end // block):
        lo, hi = b * block, (b + 1) * block
        for s_lo in range(lo, hi, sub):
            s_hi = s_lo + sub
            while bool((x[s_lo:s_hi] == mask_id).any()):
                logits = fw.denoise(x, lo, hi)
                masked = (x[s_lo:s_hi] == mask_id).nonzero().squeeze(1) + s_lo
                tokens, conf = block_rows(logits[masked - lo], masked, p, step, mask_id)
                chosen = pick(conf, p.threshold)
                x[masked[chosen]] = tokens[chosen]
                out.history.append([int(masked[j]) - plen for j in chosen])
                step += 1
                if not p.ignore_eos and stopped(gen(), mask_id, stops):
                    return _done(out, fw, gen(), mask_id, stops, "eos")
        if hi < end and next_token(lo, hi):
            return _done(out, fw, gen(), mask_id, stops, "eos")
    return _done(out, fw, gen(), mask_id, stops, "length")


def _done(out: ReferenceOutput, fw: Forwards, gen: list[int], mask_id: int, stops: set[int], reason: str):
    out.forwards = fw.count
    return finish(out, gen, mask_id, stops, reason)
