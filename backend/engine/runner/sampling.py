"""Turning logit rows into (token, confidence): greedy, Gumbel-max with temperature, random remasking.

Noise is counter-based: the uniform for (seed, step, position, vocabulary id) is a hash of those
four numbers, computed with integer tensor ops. So it does not depend on which other rows are in
the batch, on how rows are chunked, or on the device, and the engine reproduces the reference
decoder exactly while drawing noise only for the rows it decodes.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF
STREAM_GUMBEL = 0x68E31DA4
STREAM_REMASK = 0x1B56C4E9


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for 0 <= x < 2**32 without int64 overflow (split x into 16-bit halves)."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit avalanche hash (xor-shift-multiply, the 'lowbias32' constants)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _key(seed, stream: int, step, positions: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per row from (seed, stream, step, position); seed and step may be per-row tensors."""
    seed = torch.as_tensor(seed, dtype=torch.long, device=positions.device).expand_as(positions)
    step = torch.as_tensor(step, dtype=torch.long, device=positions.device).expand_as(positions)
    k = _mix32((seed ^ stream) & _M32)
    k = _mix32(k ^ ((seed >> 32) & _M32))
    k = _mix32(k ^ (step & _M32))
    return _mix32(k ^ (positions & _M32))


def uniform(seed, stream: int, step, positions: torch.Tensor, width: int, col_start: int = 0) -> torch.Tensor:
    """float64 uniforms in (0, 1), shape [rows, width], for columns col_start..col_start+width."""
    key = _key(seed, stream, step, positions.long()).unsqueeze(1)
    cols = torch.arange(col_start, col_start + width, device=positions.device, dtype=torch.long)
    a = _mix32(key ^ _mix32(cols * 2))
    b = _mix32(key ^ _mix32(cols * 2 + 1))
    # 52 random bits, offset by half a step so that 0 and 1 never occur (log(0) below).
    bits = (a >> 6) * (1 << 26) + (b >> 6)
    return (bits.to(torch.float64) + 0.5) / float(1 << 52)


def pick_tokens(logits: torch.Tensor, positions: torch.Tensor, temperature, seed, step,
                remasking="low_confidence", mask_token_id: int | None = None, sampling: bool | None = None,
                any_random: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the chosen token and the confidence used to rank rows for committing.

    `logits` are [rows, vocab] for the rows at `positions`. `temperature`, `seed` and `step` are
    scalars or per-row tensors; `remasking` is a string or a per-row bool tensor (True = random).
    Greedy rows (temperature 0) take the argmax; others use the Gumbel-max trick in float64 (argmax
    of logits - T * log(-log u), the log form of LLaDA's exp(logits) / (-log u) ** T). The
    confidence is the softmax probability of the chosen token under the un-noised logits
    (low_confidence) or a uniform draw (random). Rows are independent, so any chunking of rows
    gives the same result. The mask token is never chosen (a committed [MASK] would leave the
    position masked forever). `sampling` / `any_random`, when given, say whether any row samples /
    remasks at random (a host-side fact that spares a device read; a superset is fine, since greedy
    rows and non-random rows are unaffected by the noise paths).
    """
    rows, vocab = logits.shape
    dev = logits.device
    work = logits.to(torch.float64) if logits.dtype == torch.float64 else logits.float()
    if mask_token_id is not None:
        work = work.index_fill(-1, torch.full((1,), mask_token_id, device=dev), float("-inf"))
    temp = torch.as_tensor(temperature, dtype=torch.float64, device=dev).expand(rows)
    if bool((temp > 0).any()) if sampling is None else sampling:
        u = uniform(seed, STREAM_GUMBEL, step, positions, vocab)
        tokens = (work.to(torch.float64) - temp.unsqueeze(1) * torch.log(-torch.log(u))).argmax(-1)
    else:
        tokens = work.argmax(-1)
    chosen = work.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    conf = torch.exp(chosen - torch.logsumexp(work, dim=-1))
    random_rows = (torch.full((rows,), remasking == "random", device=dev) if isinstance(remasking, str)
                   else remasking.to(dev))
    if bool(random_rows.any()) if any_random is None else any_random:
        draw = uniform(seed, STREAM_REMASK, step, positions, 1).squeeze(1).to(conf.dtype)
        conf = torch.where(random_rows, draw, conf)
    return tokens, conf
