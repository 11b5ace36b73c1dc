"""Which masked positions a denoising step commits: the rules shared by the reference decoder and
the engine (no model, no cache here)."""

from __future__ import annotations

import torch


def transfer_schedule(num_masked: int, steps: int) -> list[int]:
    """LLaDA's linear schedule: how many tokens each of `steps` steps commits; the remainder goes
    to the first steps."""
    base, extra = divmod(num_masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


def dream_schedule(num_masked: int, steps: int, eps: float) -> list[int]:
    """Dream's schedule: how many tokens each of `steps` steps commits. Timesteps run from 1 down to
    `eps` in `steps` equal float32 steps (t_0 = 1 ... t_steps = eps); step i commits
    int(n_i * (1 - t_(i+1) / t_i)) of the n_i positions still masked (float32, as the official code
    computes it), the last step all that remain. With eps = 1e-3 and steps = length: 0 tokens, then
    one per step, then the rest at the end."""
    t = torch.linspace(1.0, eps, steps + 1, dtype=torch.float32)
    out, left = [], num_masked
    for i in range(steps):
        k = left if i == steps - 1 else int(torch.tensor(float(left), dtype=torch.float32) * (1 - t[i + 1] / t[i]))
        out.append(k)
        left -= k
    return out


def origin_transfer_probability(step: int, steps: int, eps: float) -> float:
    """Dream's `origin`: the probability (float32 arithmetic) that a masked position gets its token
    at step `step` of `steps`: 1 - t_(i+1) / t_i, and 1 at the last step."""
    if step >= steps - 1:
        return 1.0
    t = torch.linspace(1.0, eps, steps + 1, dtype=torch.float32)
    return float(1 - t[step + 1] / t[step])


def select_commits(confidence: torch.Tensor, quota: int | None = None,
                   threshold: float | None = None, transfer_p: float | None = None) -> torch.Tensor:
    """Indices (into `confidence`) of the rows to commit this step, best first.

    Fixed quota: the `quota` most confident rows. Threshold: every row at or above `threshold` (the
    official `>=`), and always at least the most confident one. Ties keep the earlier position
    (stable sort), so the engine and the reference agree exactly. `transfer_p` (Dream's origin,
    where `confidence` holds uniform draws): every row whose draw is below it, in position order.
    """
    n = confidence.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=confidence.device)
    if transfer_p is not None:  # (the last step takes all: a float32 draw may round up to 1)
        hit = confidence < transfer_p if transfer_p < 1.0 else torch.ones_like(confidence, dtype=torch.bool)
        return hit.nonzero().squeeze(1)
    order = torch.sort(confidence, descending=True, stable=True).indices
    if threshold is not None:
        k = max(1, int((confidence >= threshold).sum().item()))
    else:
        if quota is None:
            raise ValueError("select_commits needs a quota or a threshold")
        k = min(quota, n)
    return order[:k]


def contiguous_prefix(is_masked: list[bool] | torch.Tensor) -> int:
    """Length of the committed run at the start of the generation (the streaming unit)."""
    masked = torch.as_tensor(is_masked, dtype=torch.bool)
    hits = masked.nonzero()
    return int(hits[0]) if hits.numel() else int(masked.numel())
