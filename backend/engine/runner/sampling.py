"""Turning logit rows into (token, confidence), with each model family's official semantics.

LLaDA (`remasking` low_confidence / random): the token is the argmax of the logits (Gumbel-max with
temperature); its confidence is its softmax probability under the raw logits, [MASK] included in the
normalisation, as LLaDA's `generate` computes it. Dream (`alg` origin / maskgit_plus / topk_margin /
entropy): the logits are divided by the temperature first, filtered by top_p then top_k, and the
confidence comes from that distribution, as Dream's `diffusion_generate` computes it. For both
families `top_p` / `top_k` restrict the tokens that may be chosen. [MASK] itself is never chosen
(the official code could commit it and leave the position masked for good).

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
STREAM_ORIGIN = 0x3C6EF372  # Dream's origin: does a masked position get its token this step
STREAM_ALG = 0x5851F42D  # Dream's alg_temp: Gumbel keys that sample positions without replacement

# Per-row decoding rule codes (DecodeRows.alg): LLaDA's two remasking rules, then Dream's four algs.
ALG_CODES = {"low_confidence": 0, "random": 1, "origin": 2, "maskgit_plus": 3, "topk_margin": 4, "entropy": 5}
RANDOM, ORIGIN, MASKGIT_PLUS, TOPK_MARGIN, ENTROPY = 1, 2, 3, 4, 5
ENTROPY_EPS = 1e-10  # Dream's entropy confidence: sum p * log(p + 1e-10)


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


def gumbel(seed, stream: int, step, positions: torch.Tensor, width: int) -> torch.Tensor:
    """-log(-log u): float64 standard Gumbel noise from counter-based uniforms, [rows, width]."""
    return -torch.log(-torch.log(uniform(seed, stream, step, positions, width)))


def filter_keep(scaled: torch.Tensor, top_p: torch.Tensor, top_k: torch.Tensor) -> torch.Tensor:
    """Which vocabulary entries survive top_p then top_k (Dream's order), per row, as a bool mask.

    top_p (1 = off): the smallest set of most probable tokens whose probability reaches top_p (a
    token stays while the mass before it is below top_p; the first always stays). top_k (0 = off):
    tokens whose logit is at least the k-th largest among the survivors (ties kept)."""
    rows, vocab = scaled.shape
    keep = torch.ones_like(scaled, dtype=torch.bool)
    nucleus = top_p < 1.0
    if bool(nucleus.any()):
        vals, idx = torch.sort(scaled, dim=-1, descending=True)
        cum = torch.cumsum(torch.softmax(vals, dim=-1), dim=-1)
        drop = torch.zeros_like(keep)
        drop[:, 1:] = cum[:, :-1] > top_p.unsqueeze(1)
        drop &= nucleus.unsqueeze(1)
        keep = keep.scatter(-1, idx, ~drop)
        del vals, idx, cum, drop
    if bool((top_k > 0).any()):
        kmax = min(int(top_k.max()), vocab)
        masked = scaled.masked_fill(~keep, float("-inf"))
        kth = torch.topk(masked, kmax, dim=-1).values.gather(
            -1, (top_k.clamp(1, kmax) - 1).unsqueeze(1))
        keep &= (masked >= kth) | (top_k <= 0).unsqueeze(1)
    return keep


def pick_tokens(logits: torch.Tensor, positions: torch.Tensor, temperature, seed, step,
                remasking="low_confidence", mask_token_id: int | None = None, sampling: bool | None = None,
                any_random: bool | None = None, *, alg=None, top_p=None, top_k=None, alg_temp=None,
                any_dream: bool | None = None, any_filter: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: the chosen token and the score used to rank rows for committing.

    `logits` are [rows, vocab] for the rows at `positions`. `temperature`, `seed`, `step`, `top_p`
    (None or 1: off), `top_k` (None or 0: off) and `alg_temp` (None or 0: off) are scalars or per-row
    tensors; the rule is `alg` (a name of ALG_CODES or a per-row tensor of codes) or, when `alg` is
    None, `remasking` (a string or a per-row bool tensor, True = random).

    LLaDA rows: Gumbel-max on the raw logits in float64 (argmax of logits - T * log(-log u), the log
    form of LLaDA's exp(logits) / (-log u) ** T); confidence = softmax(logits)[token] with [MASK] in
    the normalisation (low_confidence) or a uniform draw (random). Dream rows: s = logits / T (T > 0),
    filtered by top_p then top_k, p = softmax(s); token = argmax(s + Gumbel) (T > 0) or argmax(s);
    confidence p[token] (maskgit_plus), top-1 minus top-2 of p (topk_margin), sum p log(p + 1e-10)
    (entropy), or for origin a uniform draw that the denoiser compares with the step's transfer
    probability; with alg_temp > 0 the confidence becomes the key conf / alg_temp + Gumbel, whose
    top k are a draw without replacement from softmax(conf / alg_temp) (Dream's multinomial).
    [MASK] is never chosen; if the filters left nothing else, the best other token under the
    unfiltered logits is. Rows are independent (counter-based noise), so any chunking of rows gives
    the same result. `sampling` / `any_random` / `any_dream` / `any_filter`, when given, say whether
    some row samples / remasks at random / follows a Dream rule / filters (host-side facts that
    spare device reads; a superset is fine).
    """
    rows, vocab = logits.shape
    dev = logits.device
    work = logits.to(torch.float64) if logits.dtype == torch.float64 else logits.float()
    temp = torch.as_tensor(temperature, dtype=torch.float64, device=dev).expand(rows)
    if alg is None:
        random_rows = (torch.full((rows,), remasking == "random", device=dev) if isinstance(remasking, str)
                       else remasking.to(dev))
        code = random_rows.long()
    else:
        code = (torch.full((rows,), ALG_CODES[alg], dtype=torch.long, device=dev) if isinstance(alg, str)
                else alg.to(dev).long())
    dream = code >= ORIGIN
    if sampling is None:
        sampling = bool((temp > 0).any())
    if any_dream is None:
        any_dream = bool(dream.any())
    p_rows = torch.as_tensor(1.0 if top_p is None else top_p, dtype=torch.float64, device=dev).expand(rows)
    k_rows = torch.as_tensor(0 if top_k is None else top_k, dtype=torch.long, device=dev).expand(rows)
    if any_filter is None:
        any_filter = bool((p_rows < 1.0).any() or (k_rows > 0).any())
    not_mask = torch.ones(vocab, dtype=torch.bool, device=dev)
    if mask_token_id is not None:
        not_mask[mask_token_id] = False

    hot = sampling and (any_dream or any_filter)
    scaled = torch.where((temp > 0).unsqueeze(1), work / temp.clamp_min(1e-300).unsqueeze(1).to(work.dtype),
                         work) if hot else work
    keep = filter_keep(scaled, p_rows, k_rows) if any_filter else None
    allowed = not_mask.unsqueeze(0) if keep is None else keep & not_mask
    if keep is not None:  # nothing but [MASK] survived: the best other token, unfiltered
        allowed = torch.where(allowed.any(-1, keepdim=True), allowed, not_mask.unsqueeze(0))
    if sampling:
        g = gumbel(seed, STREAM_GUMBEL, step, positions, vocab)
        llada_key = work.to(torch.float64) + temp.unsqueeze(1) * g
        key = torch.where(dream.unsqueeze(1), scaled.to(torch.float64) + g, llada_key) if any_dream else llada_key
        del g
        key = torch.where(temp.unsqueeze(1) > 0, key, work.to(torch.float64))
    else:
        key = work
    tokens = key.masked_fill(~allowed, float("-inf")).argmax(-1)
    del key
    chosen = work.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    conf = torch.exp(chosen - torch.logsumexp(work, dim=-1))
    if any_dream:
        conf = torch.where(dream, _dream_confidence(scaled, keep, tokens, code), conf)
    drawn = bool(((code == RANDOM) | (code == ORIGIN)).any()) if any_random is None else any_random or any_dream
    if drawn:
        conf = _drawn(conf, code, seed, step, positions)
    if any_dream and alg_temp is not None:
        a = torch.as_tensor(alg_temp, dtype=torch.float64, device=dev).expand(rows)
        on = (a > 0) & (code > ORIGIN)
        if bool(on.any()):
            g = gumbel(seed, STREAM_ALG, step, positions, 1).squeeze(1)
            conf = torch.where(on, (conf.to(torch.float64) / a.clamp_min(1e-300) + g).to(conf.dtype), conf)
    return tokens, conf


def _dream_confidence(scaled: torch.Tensor, keep: torch.Tensor | None, tokens: torch.Tensor,
                      code: torch.Tensor) -> torch.Tensor:
    """Dream's confidence per row from the tempered, filtered distribution."""
    s = scaled if keep is None else scaled.masked_fill(~keep, float("-inf"))
    probs = torch.softmax(s, dim=-1)
    del s
    conf = probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if bool((code == TOPK_MARGIN).any()):
        top2 = torch.topk(probs, 2, dim=-1).values
        conf = torch.where(code == TOPK_MARGIN, top2[:, 0] - top2[:, 1], conf)
    if bool((code == ENTROPY).any()):
        conf = torch.where(code == ENTROPY, (probs * torch.log(probs + ENTROPY_EPS)).sum(-1), conf)
    return conf


def _drawn(conf: torch.Tensor, code: torch.Tensor, seed, step, positions: torch.Tensor) -> torch.Tensor:
    """Random remasking and Dream's origin: the row's score is a uniform draw."""
    if bool((code == RANDOM).any()):
        draw = uniform(seed, STREAM_REMASK, step, positions, 1).squeeze(1).to(conf.dtype)
        conf = torch.where(code == RANDOM, draw, conf)
    if bool((code == ORIGIN).any()):
        draw = uniform(seed, STREAM_ORIGIN, step, positions, 1).squeeze(1).to(conf.dtype)
        conf = torch.where(code == ORIGIN, draw, conf)
    return conf
