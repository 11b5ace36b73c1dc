"""The block-diffusion training loss (SDAR's objective) for one micro-batch of (prompt, answer) pairs.

Decoding (backend/oracle/sdar_official.py) denoises one block of `block` positions at a time
(blocks aligned to absolute positions, the first one holding the prompt's tail) against the exact
K/V of everything before it. Training shows the model every such state at once: each sequence is
its clean tokens (prompt + answer + EOS up to the end of the EOS's block) followed by a noisy copy
of its decoded blocks, at the same positions. In each noisy block, a noise level t in (0, 1] is
drawn and every answer token is masked with probability t. Attention:

- a clean row sees the clean rows of its own block and of earlier blocks (block-causal, as in the
  cache the decoder writes);
- a noisy row sees the clean rows of earlier blocks and the noisy rows of its own block (the
  decoder's denoising step).

The loss is the cross-entropy at masked noisy rows (the hidden state of position i predicts token i:
SDAR has no logit shift), weighted by 1/t, summed per example and divided by `norm_length`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from backend.models import PackedBatch
from backend.training.padded_attention import PaddedAttention


def block_layout(prompt: list[int], answer: list[int], block: int, eos_id: int) -> list[int]:
    """Prompt + answer up to its first EOS, padded with EOS to the end of that EOS's block."""
    ans = answer[:answer.index(eos_id) + 1] if eos_id in answer else answer + [eos_id]
    n = len(prompt) + len(ans)
    return prompt + ans + [eos_id] * (-n % block)


def attention_mask(length: int, first: int, block: int) -> torch.Tensor:
    """[T, T] bool (True: may attend) over `length` clean rows then the noisy rows of positions
    [first, length), both copies' blocks aligned to absolute positions."""
    pos = torch.cat([torch.arange(length), torch.arange(first, length)])
    noisy = torch.arange(pos.numel()) >= length
    bq, bk = (pos // block)[:, None], (pos // block)[None, :]
    clean_keys = ~noisy[None, :]
    return torch.where(noisy[:, None], (clean_keys & (bk < bq)) | (~clean_keys & (bk == bq)),
                       clean_keys & (bk <= bq))


@dataclass
class NoisyBatch:
    """A micro-batch laid out for one forward: per sequence its clean rows then its noisy rows."""

    ids: torch.Tensor  # packed token ids
    positions: list[torch.Tensor]  # per sequence: the clean rows' positions, then the noisy rows'
    masks: list[torch.Tensor]  # per sequence: attention_mask
    rows: torch.Tensor  # packed rows of the masked noisy tokens, their targets, 1/t and example index
    targets: torch.Tensor
    weights: torch.Tensor
    example: torch.Tensor


def noisy_batch(prompts: list[list[int]], answers: list[list[int]], mask_id: int, gen: torch.Generator,
                block: int, eos_id: int) -> NoisyBatch:
    ids, positions, masks, rows, targets, weights, example = [], [], [], [], [], [], []
    offset = 0
    for i, (p, a) in enumerate(zip(prompts, answers, strict=True)):
        clean = torch.tensor(block_layout(p, a, block, eos_id))
        n, first = clean.numel(), (len(p) // block) * block
        noisy = clean[first:].clone()
        blocks = torch.arange(first, n) // block - first // block
        t = torch.rand(int(blocks.max()) + 1, generator=gen).clamp_min(1e-3)  # one noise level per block
        hit = (torch.rand(noisy.numel(), generator=gen) < t[blocks]) & (torch.arange(first, n) >= len(p))
        noisy[hit] = mask_id
        ids.append(torch.cat([clean, noisy]))
        positions.append(torch.cat([torch.arange(n), torch.arange(first, n)]))
        masks.append(attention_mask(n, first, block))
        at = hit.nonzero().flatten()
        rows.append(offset + n + at)
        targets.append(clean[first + at])
        weights.append(1.0 / t[blocks[at]])
        example.append(torch.full((at.numel(),), i))
        offset += n + noisy.numel()
    return NoisyBatch(torch.cat(ids), positions, masks, torch.cat(rows), torch.cat(targets), torch.cat(weights),
                      torch.cat(example))


def hidden_states(model, nb: NoisyBatch) -> torch.Tensor:
    """The final hidden state of every packed row of `nb` (one padded forward)."""
    batch = PackedBatch.from_positions(nb.positions, model.device)
    return model(nb.ids.to(model.device), batch, PaddedAttention(batch, nb.masks))


def block_diffusion_loss(model, prompts: list[list[int]], answers: list[list[int]], mask_id: int,
                         gen: torch.Generator, bf16: bool, block: int, eos_id: int,
                         norm_length: int = 32) -> tuple[torch.Tensor, int]:
    """Per example: (sum over masked noisy rows of CE / t) / norm_length; and the rows computed."""
    device = model.device
    nb = noisy_batch(prompts, answers, mask_id, gen, block, eos_id)
    rows, targets, weights, example = (x.to(device) for x in (nb.rows, nb.targets, nb.weights, nb.example))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = model.lm_head(hidden_states(model, nb)[rows])
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    per_example = torch.zeros(len(prompts), device=device).index_add_(0, example, ce * weights) / norm_length
    return per_example, int(nb.ids.numel())
