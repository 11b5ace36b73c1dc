"""A training-only attention context: the packed sequences padded into one [B, H, L, D] SDPA call.

The models' portable attention path runs one SDPA call per sequence, which keeps inference
batch-invariant but makes a training batch of a hundred short sequences slow on a CPU. Here the
packed rows are scattered into a padded tensor and padded keys are masked out, so every sequence
still attends only to its own rows (the same function, computed in one call).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from backend.models import AttentionContext, PackedBatch


class PaddedAttention(AttentionContext):
    def __init__(self, batch: PackedBatch, masks: list[torch.Tensor] | None = None):
        """`masks[i]`: sequence i's own [n_i, n_i] bool mask (True: may attend); None: full attention."""
        device = batch.positions.device
        lengths = torch.tensor(batch.seqlens, device=device)
        self.num_seqs, self.max_len = batch.num_seqs, batch.max_seqlen
        seq = torch.repeat_interleave(torch.arange(self.num_seqs, device=device), lengths)
        offset = torch.arange(sum(batch.seqlens), device=device) - torch.repeat_interleave(
            batch.cu_seqlens[:-1].long(), lengths)
        self.rows = seq * self.max_len + offset  # packed row -> row of the padded [B * L] layout
        valid = torch.arange(self.max_len, device=device)[None, :] < lengths[:, None]
        self.key_mask = valid[:, None, None, :]  # [B, 1, 1, L]: True where a key may be attended
        if masks is not None:
            # Padded query rows keep the key mask (a row that attends to nothing would give NaN).
            full = self.key_mask.expand(self.num_seqs, 1, self.max_len, self.max_len).clone()
            for i, m in enumerate(masks):
                n = m.shape[0]
                full[i, 0, :n, :n] = m.to(device)
            self.key_mask = full

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros(self.num_seqs * self.max_len, *x.shape[1:])
        out[self.rows] = x
        return out.view(self.num_seqs, self.max_len, *x.shape[1:]).transpose(1, 2)  # [B, H, L, D]

    def attend(self, layer: int, q, k, v, batch: PackedBatch) -> torch.Tensor:
        hq, hkv = q.shape[1], k.shape[1]
        # CPU: float32 even under bf16 autocast (the CPU kernel's backward is faster in float32).
        # CUDA: the autocast dtype, which the memory-efficient kernel takes with a mask.
        low = q.dtype in (torch.bfloat16, torch.float16)
        dtype = torch.float32 if q.device.type == "cpu" and low else q.dtype
        with torch.autocast(q.device.type, enabled=False):
            out = F.scaled_dot_product_attention(self._pad(q.to(dtype)), self._pad(k.to(dtype)), self._pad(v.to(dtype)),
                                                 attn_mask=self.key_mask, enable_gqa=hq != hkv)
        out = out.to(q.dtype).transpose(1, 2).reshape(self.num_seqs * self.max_len, hq, -1)
        return out[self.rows]
