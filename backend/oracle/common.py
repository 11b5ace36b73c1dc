"""What the reference decoders share: the output record, full logits, stop handling, and the
official row rules (full vocabulary, one plain tensor expression per rule)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from backend.engine.runner.sampling import STREAM_ALG, STREAM_GUMBEL, STREAM_ORIGIN, STREAM_REMASK, uniform
from backend.models import DiffusionLM, PackedBatch


@dataclass
class ReferenceOutput:
    tokens: list[int]  # generated ids; with an EOS stop, the ids before the first stop token
    finish_reason: str  # "eos" or "length"
    forwards: int  # model forwards (= denoising steps)
    # Per step, the generation offsets (0-based) committed in that step, in commit order.
    history: list[list[int]] = field(default_factory=list)
    full: list[int] = field(default_factory=list)  # the whole generation region at the end (masks included)
    # Generation offset -> the logits row at that position in the step that committed it (what a
    # token's log-probability is read from).
    committed_logits: dict[int, torch.Tensor] = field(default_factory=dict)


def full_logits(model: DiffusionLM, ids: torch.Tensor) -> torch.Tensor:
    """[L, vocab] logits for every position of one sequence, Dream's shift applied."""
    hidden = model(ids, PackedBatch.contiguous([ids.numel()], ids.device))
    rows = model.hidden_rows_for(torch.arange(ids.numel(), device=ids.device))
    return model.lm_head(hidden[rows])


def as_work(logits: torch.Tensor) -> torch.Tensor:
    """The precision decisions are made in: float64 for a float64 model, float32 otherwise."""
    return logits.to(torch.float64) if logits.dtype == torch.float64 else logits.float()


def gumbel(seed: int, stream: int, step: int, positions: torch.Tensor, width: int) -> torch.Tensor:
    """The counter-based Gumbel noise the engine draws (the same uniforms), [n, width] float64. It
    stands for the official code's torch.rand: distributionally the same, and batch-invariant."""
    return -torch.log(-torch.log(uniform(seed, stream, step, positions, width)))


def nucleus_then_top_k(s: torch.Tensor, top_p: float | None, top_k: int | None) -> torch.Tensor:
    """Dream's filters, in its order, on [n, vocab] (tempered) logits: removed entries become the
    dtype's lowest finite value, as in the official code."""
    low = torch.finfo(s.dtype).min
    if top_p is not None and top_p < 1:
        vals, idx = torch.sort(s, dim=-1, descending=True)
        mass_before = torch.cumsum(torch.softmax(vals, dim=-1), dim=-1)
        drop = torch.zeros_like(vals, dtype=torch.bool)
        drop[:, 1:] = mass_before[:, :-1] > top_p  # a token goes once the mass before it exceeds top_p
        s = s.masked_fill(torch.zeros_like(drop).scatter(-1, idx, drop), low)
    if top_k is not None:
        kth = torch.topk(s, min(top_k, s.shape[-1]), dim=-1).values[:, -1:]
        s = s.masked_fill(s < kth, low)
    return s


def choose(key: torch.Tensor, fallback_key: torch.Tensor, kept: torch.Tensor, mask_id: int) -> torch.Tensor:
    """argmax of `key` over kept tokens other than [MASK] (a committed [MASK] would stay masked for
    good: the one deliberate departure from the official code); when the filters kept only [MASK],
    argmax of `fallback_key` over every other token."""
    ok = kept.clone()
    ok[:, mask_id] = False
    none = ~ok.any(-1)
    ok[none] = True
    ok[none, mask_id] = False
    picked = torch.where(none.unsqueeze(1), fallback_key, key)
    return picked.masked_fill(~ok, float("-inf")).argmax(-1)


def llada_rows(logits: torch.Tensor, positions: torch.Tensor, p, step: int, mask_id: int):
    """LLaDA's `generate` on the masked rows of one step: (tokens, confidence).

    token: argmax of the logits plus temperature-scaled Gumbel noise (float64), among the tokens the
    general top_p / top_k filters keep (computed on logits / T); confidence: softmax of the raw
    logits, [MASK] included, at that token (low_confidence), or a uniform draw (random)."""
    work = as_work(logits)
    t = p.temperature
    s = work / t if t > 0 else work
    kept = nucleus_then_top_k(s, p.top_p, p.top_k) > torch.finfo(s.dtype).min
    key = work.to(torch.float64) + t * gumbel(p.seed, STREAM_GUMBEL, step, positions, work.shape[1]) if t > 0 \
        else work
    tokens = choose(key, key, kept, mask_id)
    conf = torch.softmax(work, dim=-1).gather(-1, tokens.unsqueeze(1)).squeeze(1)
    if p.remasking == "random":
        conf = uniform(p.seed, STREAM_REMASK, step, positions, 1).squeeze(1).to(conf.dtype)
    return tokens, conf


def dream_rows(logits: torch.Tensor, positions: torch.Tensor, p, step: int, mask_id: int):
    """Dream's `sample_tokens` plus its alg on the masked rows of one step: (tokens, score).

    The temperature divides the logits first; top_p then top_k filter them; p = softmax. token: a
    draw from p (Gumbel-max) or its argmax; score: p[token] (maskgit_plus), top-1 minus top-2 of p
    (topk_margin), sum p log(p + 1e-10) (entropy), a uniform draw for origin; with alg_temp > 0,
    score / alg_temp + Gumbel noise, whose top n are a draw of n positions without replacement from
    softmax(score / alg_temp), which is what the official multinomial draws."""
    work = as_work(logits)
    t = p.temperature
    s = work / t if t > 0 else work
    f = nucleus_then_top_k(s, p.top_p, p.top_k)
    probs = torch.softmax(f, dim=-1)
    if t > 0:
        g = gumbel(p.seed, STREAM_GUMBEL, step, positions, work.shape[1])
        tokens = choose(f.to(torch.float64) + g, s.to(torch.float64) + g, f > torch.finfo(f.dtype).min, mask_id)
    else:
        tokens = choose(f, s, f > torch.finfo(f.dtype).min, mask_id)
    if p.alg == "origin":
        return tokens, uniform(p.seed, STREAM_ORIGIN, step, positions, 1).squeeze(1).to(probs.dtype)
    if p.alg == "maskgit_plus":
        score = probs.gather(-1, tokens.unsqueeze(1)).squeeze(1)
    elif p.alg == "topk_margin":
        top = torch.sort(probs, dim=-1, descending=True).values
        score = top[:, 0] - top[:, 1]
    else:  # entropy
        score = (probs * torch.log(probs + 1e-10)).sum(-1)
    if p.alg_temp:
        score = (score.to(torch.float64) / p.alg_temp
                 + gumbel(p.seed, STREAM_ALG, step, positions, 1).squeeze(1)).to(score.dtype)
    return tokens, score


def best_first(score: torch.Tensor, n: int) -> list[int]:
    """Indices of the n highest scores; equal scores: the earlier position first (the official
    torch.topk leaves ties unspecified)."""
    order = sorted(range(score.numel()), key=lambda i: (-float(score[i]), i))
    return order[:n]


def stopped(gen: list[int], mask_id: int, stops: set[int]) -> bool:
    prefix = gen[:gen.index(mask_id)] if mask_id in gen else gen
    return any(t in stops for t in prefix)


def finish(out: ReferenceOutput, gen: list[int], mask_id: int, stops: set[int], reason: str) -> ReferenceOutput:
    out.full = list(gen)
    out.finish_reason = reason
    prefix = gen[:gen.index(mask_id)] if mask_id in gen else list(gen)
    out.tokens = prefix[:next(i for i, t in enumerate(prefix) if t in stops)] if reason == "eos" else list(gen)
    return out
