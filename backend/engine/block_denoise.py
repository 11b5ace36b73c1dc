"""Which masked rows a block-diffusion step commits (the engine's side; the oracles write the same
rules out independently): SDAR's three remasking strategies and Fast-dLLM v2's threshold rule."""

from __future__ import annotations

import torch

from backend.engine.denoise import transfer_schedule


def sdar_commits(confidence: torch.Tensor, quota: int, rule: str, threshold: float | None) -> list[int]:
    """Indices into the block's masked rows (in position order) committed this step. `quota` is the
    step's entry of the linear schedule of block_length over denoising_steps, capped at the rows left.
    low_confidence_static: the `quota` most probable (ties: the earlier row); low_confidence_dynamic:
    every row whose probability is > threshold when they are at least `quota`, else as static;
    sequential: the first `quota` rows."""
    n = confidence.numel()
    k = min(quota, n)
    if rule == "sequential":
        return list(range(k))
    if rule == "low_confidence_dynamic":
        high = (confidence > threshold).nonzero().squeeze(1)
        if high.numel() >= k:
            return high.tolist()
    order = torch.sort(confidence, descending=True, stable=True).indices[:k]
    return sorted(order.tolist())


def fast_dllm_commits(confidence: torch.Tensor, threshold: float) -> list[int]:
    """Every row whose probability is > threshold, and always the most probable (the first of equals)."""
    keep = confidence > threshold
    keep[int(torch.argmax(confidence))] = True
    return keep.nonzero().squeeze(1).tolist()


def sdar_quota(block_length: int, steps: int, step_in_block: int) -> int:
    return transfer_schedule(block_length, steps)[step_in_block]
