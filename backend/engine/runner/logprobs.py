"""Log-probabilities of committed tokens (vLLM's `logprobs`, issue 23).

For a diffusion model a token is predicted at every step its position stays masked; the one that
counts is the step that commits it. Its log-probability is read there, from the model's logits at
that position: log-softmax over every vocabulary entry but [MASK] (which is never committed), before
temperature, top_p and top_k, as vLLM reports by default ("raw" log-probabilities). So the token a
greedy request commits always has rank 1, and the numbers do not depend on the sampling settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TokenLogprobs:
    """Per decoded row that asked: the chosen token's log-probability and rank (1 = most likely), and
    the `k` most likely tokens with theirs, best first (k = the most any row asked for)."""

    logprob: torch.Tensor  # [R] float
    rank: torch.Tensor  # [R] long
    top_ids: torch.Tensor  # [R, k] long
    top_logprobs: torch.Tensor  # [R, k] float

    @classmethod
    def empty(cls, k: int, device, dtype=torch.float32) -> TokenLogprobs:
        return cls(torch.empty(0, dtype=dtype, device=device), torch.empty(0, dtype=torch.long, device=device),
                   torch.empty(0, k, dtype=torch.long, device=device), torch.empty(0, k, dtype=dtype, device=device))

    @classmethod
    def cat(cls, parts: list[TokenLogprobs]) -> TokenLogprobs:
        return cls(*(torch.cat([getattr(p, f) for p in parts]) for f in ("logprob", "rank", "top_ids", "top_logprobs")))


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, mask_token_id: int | None, k: int) -> TokenLogprobs:
    """`logits` [R, vocab] (raw, as the head gives them), `tokens` [R] the chosen tokens."""
    work = logits.to(torch.float64) if logits.dtype == torch.float64 else logits.float()
    if mask_token_id is not None:
        work = work.clone()
        work[:, mask_token_id] = float("-inf")
    lsm = torch.log_softmax(work, dim=-1)
    del work
    chosen = lsm.gather(1, tokens.unsqueeze(1)).squeeze(1)
    rank = (lsm > chosen.unsqueeze(1)).sum(1) + 1
    top = min(k, lsm.shape[1] - (mask_token_id is not None))
    vals, ids = torch.topk(lsm, top, dim=-1) if top > 0 else (lsm[:, :0], lsm[:, :0].long())
    return TokenLogprobs(chosen, rank, ids, vals)
