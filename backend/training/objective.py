"""LLaDA's SFT loss for one micro-batch of (prompt, answer) pairs, on any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.models import PackedBatch
from backend.models.attention import cumulative
from backend.training.padded_attention import PaddedAttention


def masks_and_weights(answers: torch.Tensor, t: torch.Tensor, gen: torch.Generator, semi_ar: float,
                      blocks: tuple[int, ...], eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, gen_len] masked positions and their loss weights.

    LLaDA's SFT: each answer token masked with probability t, weight 1/t. With `semi_ar` > 0 that
    fraction of the examples is drawn instead as a state the server's semi-autoregressive decoding
    passes through: a block of `blocks` (drawn) up to the one holding the first EOS, the blocks before
    it clean, its tokens masked with probability t (weight 1/t), every later position masked (weight 1).
    Uniform masking almost never shows a fully masked tail behind a half-decoded block, which is what
    a request with a large max_tokens sees (issue 22).
    """
    n, gen_len = answers.shape
    masked = torch.rand(n, gen_len, generator=gen) < t[:, None]
    weight = (1.0 / t)[:, None].expand(n, gen_len).clone()
    if semi_ar <= 0:
        return masked, weight
    pos = torch.arange(gen_len)
    first_eos = torch.where(answers == eos_id, pos, gen_len).min(dim=1).values
    chosen = torch.rand(n, generator=gen) < semi_ar
    for i in chosen.nonzero().flatten().tolist():
        size = blocks[int(torch.randint(len(blocks), (1,), generator=gen))]
        b = int(torch.randint(int(first_eos[i]) // size + 1, (1,), generator=gen))
        lo, hi = b * size, (b + 1) * size
        masked[i, :lo] = False
        masked[i, hi:] = True
        weight[i, hi:] = 1.0
    return masked, weight


def masked_diffusion_loss(model, prompts: list[list[int]], answers: list[list[int]], mask_id: int,
                          gen: torch.Generator, bf16: bool, norm_length: int | None = None, semi_ar: float = 0.0,
                          blocks: tuple[int, ...] = (16, 32), eos_id: int = -1) -> tuple[torch.Tensor, int]:
    """Per example: (sum over masked answer tokens of CE x weight) / gen_length (or `norm_length`, so
    that an answer token weighs the same whatever EOS padding its micro-batch has); and the tokens
    computed.

    Noise levels and masks are drawn with the host generator `gen`, so they do not depend on the
    device the model is on.
    """
    device = model.device
    n, gen_len = len(prompts), len(answers[0])
    # Stratified t (one draw per 1/n slice of (0, 1]): the same objective with less variance.
    t = (torch.arange(n) + torch.rand(n, generator=gen)) / n
    t = t[torch.randperm(n, generator=gen)].clamp_min(1e-3)
    ans = torch.tensor(answers)
    masked, weights = masks_and_weights(ans, t, gen, semi_ar, blocks, eos_id)
    noisy = torch.where(masked, torch.full_like(ans, mask_id), ans)
    ids = torch.cat([torch.cat([torch.tensor(p), noisy[i]]) for i, p in enumerate(prompts)])
    lengths = [len(p) + gen_len for p in prompts]
    batch = PackedBatch.contiguous(lengths, device)
    # Packed row of every answer position; only the masked ones go through the vocabulary head.
    starts = cumulative(lengths)[:-1].long() + torch.tensor([len(p) for p in prompts])  # host: no device sync
    rows = (starts[:, None] + torch.arange(gen_len)[None, :])[masked]
    example = torch.arange(n)[:, None].expand(n, gen_len)[masked]
    weight = weights[masked]
    ids, rows, example, weight = (x.to(device, non_blocking=True) for x in (ids, rows, example, weight))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        hidden = model(ids, batch, PaddedAttention(batch))
        logits = model.lm_head(hidden[rows])
    ce = F.cross_entropy(logits.float(), ans[masked].to(device, non_blocking=True), reduction="none")
    per_example = torch.zeros(n, device=device).index_add_(0, example, ce * weight) / (norm_length or gen_len)
    return per_example, int(sum(lengths))
