"""Block-causal attention: each query sees every key of an earlier block and every key of its own
block (blocks are aligned to absolute positions: block = position // block_size), nothing later.

This is how SDAR and Fast-dLLM v2 attend at inference (their `block_diffusion_attention_mask` /
`eval_mask`), so the K/V of a finished block never changes and can be cached exactly. The context
here computes it without a cache (the oracles' plain forward and the tests' reference); the engine's
cached form is `backend/engine/attention/block_attention.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.models.attention import AttentionContext, PackedBatch


def block_causal_mask(q_positions: torch.Tensor, k_positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """[Tq, Tk] bool: True where the query may attend to the key."""
    return (k_positions // block_size).unsqueeze(0) <= (q_positions // block_size).unsqueeze(1)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """One sequence: q [Tq, Hq, D], k/v [Tk, Hkv, D], allowed [Tq, Tk] -> [Tq, Hq, D] (GQA-aware SDPA)."""
    hq, hkv = q.shape[1], k.shape[1]
    out = F.scaled_dot_product_attention(q.transpose(0, 1).unsqueeze(0), k.transpose(0, 1).unsqueeze(0),
                                         v.transpose(0, 1).unsqueeze(0), attn_mask=allowed, enable_gqa=hq != hkv)
    return out.squeeze(0).transpose(0, 1)


class BlockCausalAttention(AttentionContext):
    """No cache: every sequence attends block-causally among its own rows (by their absolute positions)."""

    def __init__(self, block_size: int):
        if block_size < 1:
            raise ValueError(f"block_size: must be >= 1, got {block_size}")
        self.block_size = block_size

    def attend(self, layer: int, q, k, v, batch: PackedBatch) -> torch.Tensor:
        out = torch.empty_like(q)
        s = 0
        for n in batch.seqlens:
            pos = batch.positions[s:s + n]
            out[s:s + n] = masked_attention(q[s:s + n], k[s:s + n], v[s:s + n],
                                            block_causal_mask(pos, pos, self.block_size))
            s += n
        return out


def block_causal_logits(model, ids: torch.Tensor, block_size: int) -> torch.Tensor:
    """[L, vocab] logits of one sequence under the block-causal mask, the family's shift applied
    (Fast-dLLM v2: row i predicts token i+1; position 0 is its own predictor)."""
    n = ids.numel()
    hidden = model(ids, PackedBatch.contiguous([n], ids.device), BlockCausalAttention(block_size))
    return model.lm_head(hidden[model.hidden_rows_for(torch.arange(n, device=ids.device))])
