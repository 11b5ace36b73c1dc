"""What the block-diffusion oracles share: the block geometry, the row rule, and two ways to get a
block's logits: from an exact K/V cache written the official way (prefill once, one extra forward per
finished block), or by recomputing everything up to the block under the block-causal mask (the
plain decoder the cached one must equal)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from backend.models import AttentionContext, PackedBatch
from backend.models.block_causal import block_causal_logits, block_causal_mask, masked_attention
from backend.oracle.common import dream_rows


def geometry(prompt_len: int, max_tokens: int, block: int) -> tuple[int, int]:
    """(first decoded block, end of the decoded region): blocks are aligned to absolute positions, the
    first one holds the prompt's tail (if any) and the region ends at a block boundary."""
    return prompt_len // block, -(-(prompt_len + max_tokens) // block) * block


def block_rows(logits: torch.Tensor, positions: torch.Tensor, p, step: int, mask_id: int, greedy: bool = False):
    """(tokens, confidence) of the rows being decoded: both families draw the token from the tempered,
    filtered softmax (argmax at temperature 0) and rank by that token's probability: Dream's
    maskgit_plus rule, whose noise is the engine's counter-based one."""
    rule = SimpleNamespace(alg="maskgit_plus", alg_temp=None, seed=p.seed, temperature=0.0 if greedy else p.temperature,
                           top_p=None if greedy else p.top_p, top_k=None if greedy else p.top_k)
    return dream_rows(logits, positions, rule, step, mask_id)


class _CacheContext(AttentionContext):
    """The rows of one forward attend to every cached position and block-causally to each other; with
    `store`, their K/V are appended to the cache afterwards (a finished block, the prompt)."""

    def __init__(self, cache: BlockKV, store: bool):
        self.cache, self.store = cache, store

    def attend(self, layer, q, k, v, batch: PackedBatch):
        ck, cv = self.cache.k[layer], self.cache.v[layer]
        n = ck.shape[0]
        pos = batch.positions
        allowed = torch.cat([torch.ones(q.shape[0], n, dtype=torch.bool, device=q.device),
                             block_causal_mask(pos, pos, self.cache.block)], dim=1)
        out = masked_attention(q, torch.cat([ck, k]), torch.cat([cv, v]), allowed)
        if self.store:
            self.cache.k[layer], self.cache.v[layer] = torch.cat([ck, k]), torch.cat([cv, v])
        return out


class BlockKV:
    """One request's exact K/V of positions [0, length), layer by layer (the official DynamicCache)."""

    def __init__(self, model, block: int):
        cfg = model.config
        empty = torch.empty(0, cfg.num_kv_heads, cfg.head_dim, dtype=model.dtype, device=model.device)
        self.k, self.v = [empty] * cfg.num_layers, [empty] * cfg.num_layers
        self.block = block

    @property
    def length(self) -> int:
        return int(self.k[0].shape[0])


class Forwards:
    """Logits of rows [lo, hi) of `x` (the family's shift applied: Fast-dLLM's row q is hidden q-1, and
    the block's first row, never decoded, its own), cached or recomputed. `commit(x, lo, hi)` writes a
    finished block (or the prompt's whole blocks) and returns its logits."""

    def __init__(self, model, block: int, cached: bool):
        self.model, self.block, self.cached = model, block, cached
        self.kv = BlockKV(model, block) if cached else None
        self.count = 0

    def _run(self, x: torch.Tensor, lo: int, hi: int, store: bool) -> torch.Tensor:
        self.count += 1
        m = self.model
        if not self.cached:
            return block_causal_logits(m, x[:hi], self.block)[lo:hi]
        if self.kv.length != lo:
            raise RuntimeError(f"oracle: cache holds {self.kv.length} positions, the forward starts at {lo}")
        batch = PackedBatch.from_positions([torch.arange(lo, hi)], x.device)
        hidden = m(x[lo:hi], batch, _CacheContext(self.kv, store))
        rows = (torch.arange(hi - lo, device=x.device) - m.config.logit_shift).clamp_min(0)
        return m.lm_head(hidden[rows])

    def denoise(self, x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return self._run(x, lo, hi, store=False)

    def commit(self, x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        return self._run(x, lo, hi, store=True)

    def next_token_logits(self, x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Commit [lo, hi) and return the logits of the row after it (Fast-dLLM's next-token prediction,
        from the last committed hidden state)."""
        if not self.cached:
            self.count += 1
            return block_causal_logits(self.model, x[:hi + 1], self.block)[hi:hi + 1]
        m = self.model
        self.count += 1
        batch = PackedBatch.from_positions([torch.arange(lo, hi)], x.device)
        hidden = m(x[lo:hi], batch, _CacheContext(self.kv, True))
        return m.lm_head(hidden[-1:])
