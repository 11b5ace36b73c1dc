"""LLaDA's SFT loss for one micro-batch of (prompt, answer) pairs, on any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.models import PackedBatch
from backend.models.attention import cumulative
from backend.training.padded_attention import PaddedAttention


def masked_diffusion_loss(model, prompts: list[list[int]], answers: list[list[int]], mask_id: int,
                          gen: torch.Generator, bf16: bool) -> tuple[torch.Tensor, int]:
    """Per example: (sum over masked answer tokens of CE / t) / gen_length; and the tokens computed.

    Noise levels and masks are drawn with the host generator `gen`, so they do not depend on the
    device the model is on.
    """
    device = model.device
    n, gen_len = len(prompts), len(answers[0])
    # Stratified t (one draw per 1/n slice of (0, 1]): the same objective with less variance.
    t = (torch.arange(n) + torch.rand(n, generator=gen)) / n
    t = t[torch.randperm(n, generator=gen)].clamp_min(1e-3)
    masked = torch.rand(n, gen_len, generator=gen) < t[:, None]
    ans = torch.tensor(answers)
    noisy = torch.where(masked, torch.full_like(ans, mask_id), ans)
    ids = torch.cat([torch.cat([torch.tensor(p), noisy[i]]) for i, p in enumerate(prompts)])
    lengths = [len(p) + gen_len for p in prompts]
    batch = PackedBatch.contiguous(lengths, device)
    # Packed row of every answer position; only the masked ones go through the vocabulary head.
    starts = cumulative(lengths)[:-1].long() + torch.tensor([len(p) for p in prompts])  # host: no device sync
    rows = (starts[:, None] + torch.arange(gen_len)[None, :])[masked]
    example = torch.arange(n)[:, None].expand(n, gen_len)[masked]
    weight = (1.0 / t)[:, None].expand(n, gen_len)[masked]
    ids, rows, example, weight = (x.to(device, non_blocking=True) for x in (ids, rows, example, weight))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = model(ids, batch, PaddedAttention(batch))
        logits = model.lm_head(hidden[rows])
    ce = F.cross_entropy(logits.float(), ans[masked].to(device, non_blocking=True), reduction="none")
    per_example = torch.zeros(n, device=device).index_add_(0, example, ce * weight) / gen_len
    return per_example, int(sum(lengths))
