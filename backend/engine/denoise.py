"""Which masked positions a denoising step commits: the rules shared by the reference decoder and
the engine (no model, no cache here)."""

from __future__ import annotations

import torch


def transfer_schedule(num_masked: int, steps: int) -> list[int]:
    """LLaDA's linear schedule: how many tokens each of `steps` steps commits; the remainder goes
    to the first steps."""
    base, extra = divmod(num_masked, steps)
    return [base + (1 if i < extra else 0) for i in range(steps)]


def select_commits(confidence: torch.Tensor, quota: int | None = None,
                   threshold: float | None = None) -> torch.Tensor:
    """Indices (into `confidence`) of the rows to commit this step, best first.

    Fixed quota: the `quota` most confident rows. Threshold: every row above `threshold`, and
    always at least the most confident one. Ties keep the earlier position (stable sort), so the
    engine and the reference agree exactly.
    """
    n = confidence.numel()
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=confidence.device)
    order = torch.sort(confidence, descending=True, stable=True).indices
    if threshold is not None:
        k = max(1, int((confidence > threshold).sum().item()))
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
