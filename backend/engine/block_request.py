"""A block-diffusion request (SDAR, Fast-dLLM v2) and its exact block cache: no tensors here.

Blocks are aligned to absolute positions (block i holds [i*B, (i+1)*B)); the generation region runs
from the prompt to the first block boundary at or past prompt + max_tokens. The pool holds the exact
K/V of positions [0, cached_upto): the prompt's whole blocks and every finished block. Each step is
a `StepPlan` over rows [lo, hi) attending to the cached positions and block-causally to each other:

- compute steps (the scheduler's REFRESH phase: `needs_refresh`), while cached_upto < the current
  block: a prefill chunk of at most `chunk` rows (whole blocks, stored), or the write of a just
  finished block. SDAR's extra forward of a finished block rides with the next block's first
  denoising step (rows [finished, next block end): the finished rows cannot see the new block, so
  their K/V are what the official separate forward writes). Fast-dLLM v2's cannot: its output, the
  next-token prediction of the finished block's last row, is the next block's first token; so the
  step that stores the block (or the prompt, when it ends on a block boundary) decodes that one
  position, greedily.
- denoising steps (REUSE): the current block alone against the cache, its masked rows decoded
  (Fast-dLLM v2: those of the first sub-block that has any).

Preemption drops the cache (`cached_block = None` resets cached_upto): the request re-prefills its
prompt and finished blocks, which gives the same K/V, and resumes where it was.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.engine.block_denoise import fast_dllm_commits, sdar_commits, sdar_quota
from backend.engine.request import Request


@dataclass(frozen=True)
class StepPlan:
    lo: int  # rows [lo, hi) are computed; positions [0, lo) are read from the cache
    hi: int
    store_hi: int  # rows [lo, store_hi) are stored (store_hi == lo: nothing)
    decode: tuple[int, ...]  # positions decoded this step
    greedy: bool = False  # Fast-dLLM v2's next-token prediction: argmax, committed as it is
    denoise: bool = True  # a denoising step (counts for the schedule and the noise counter)


class BlockRequest(Request):
    def __init__(self, request_id: str, prompt_ids: list[int], params, mask_token_id: int, logit_shift: int,
                 chunk: int):
        self.chunk = chunk  # most rows of one compute step (a multiple of the block length)
        self.step_chunk: int | None = None  # this iteration's chunk, when the scheduler sized it (fit_chunk)
        self.cached_upto = 0
        super().__init__(request_id, prompt_ids, params, mask_token_id, logit_shift)

    def __post_init__(self):
        b = self.params.block_length
        self.end = -(-(self.prompt_len + self.params.max_tokens) // b) * b
        self.tokens = list(self.prompt_ids) + [self.mask_token_id] * (self.end - self.prompt_len)
        self.block = self.prompt_len // b  # absolute index of the block being decoded

    # The scheduler drops a cache by setting cached_block to None.
    @property
    def cached_block(self):
        return self.cached_upto or None

    @cached_block.setter
    def cached_block(self, value) -> None:
        if value is None:
            self.cached_upto = 0

    # --- geometry -------------------------------------------------------------------------------
    @property
    def block_start(self) -> int:
        return self.block * self.params.block_length

    @property
    def block_end(self) -> int:
        return self.block_start + self.params.block_length

    def masked_positions(self) -> list[int]:
        return [p for p in range(self.block_start, self.block_end) if self.tokens[p] == self.mask_token_id]

    def fit_chunk(self, tokens: int | None) -> bool:
        """The scheduler sizes this iteration's compute step to `tokens` rows: whole blocks, at least one
        (None: the full chunk). False when not even one block fits."""
        b = self.params.block_length
        self.step_chunk = None if tokens is None else max(b, min(self.chunk, tokens // b * b))
        return tokens is None or tokens >= b

    def plan(self) -> StepPlan:
        lo, bs, be = self.cached_upto, self.block_start, self.block_end
        chunk = self.step_chunk or self.chunk
        if lo < bs:
            if self.logit_shift == 0:  # SDAR: reach the block's end if the chunk allows, and denoise it too
                hi = min(lo + chunk, be)
                if hi == be:
                    return StepPlan(lo, hi, bs, tuple(self.masked_positions()))
                return StepPlan(lo, hi, hi, (), denoise=False)
            hi = min(lo + chunk, bs)
            first = (bs,) if hi == bs and self.tokens[bs] == self.mask_token_id else ()
            return StepPlan(lo, hi, hi, first, greedy=True, denoise=False)
        return StepPlan(bs, be, bs, tuple(self._denoised_rows()))

    def _denoised_rows(self) -> list[int]:
        masked = self.masked_positions()
        sub = self.params.sub_block_length
        if not sub or not masked:
            return masked
        first = (masked[0] - self.block_start) // sub  # the first sub-block that still has a mask
        return [p for p in masked if (p - self.block_start) // sub == first]

    # --- what the scheduler asks -----------------------------------------------------------------
    @property
    def needs_refresh(self) -> bool:
        return self.cached_upto < self.block_start

    @property
    def refresh_cost(self) -> int:
        p = self.plan()
        return p.hi - p.lo

    @property
    def reuse_cost(self) -> int:
        return self.params.block_length

    @property
    def refresh_period(self) -> int:
        p = self.params
        return max(1, p.denoising_steps or p.block_length // 4)

    @property
    def cacheable(self) -> int:
        return self.end - self.params.block_length  # the last block is never stored

    @property
    def cached_slots(self) -> int:
        return max(self.cacheable, 1)

    @property
    def sparse(self) -> bool:
        return False

    # --- commits ---------------------------------------------------------------------------------
    def select(self, plan: StepPlan, confidence) -> list[int]:
        """Indices into `plan.decode` that this step commits."""
        p = self.params
        if plan.greedy:
            return list(range(len(plan.decode)))
        if p.sub_block_length:  # Fast-dLLM v2
            return fast_dllm_commits(confidence, p.threshold)
        quota = sdar_quota(p.block_length, p.denoising_steps, self.step_in_block)
        return sdar_commits(confidence, quota, p.remasking, p.threshold)

    def apply(self, plan: StepPlan, tokens: list[int], confidence) -> int:
        """Record a step's stores and commits; returns the number of tokens committed."""
        self.cached_upto = max(self.cached_upto, plan.store_hi)
        self.step_chunk = None
        chosen = self.select(plan, confidence) if plan.decode else []
        for i in chosen:
            self.tokens[plan.decode[i]] = tokens[i]
        if plan.denoise and plan.decode:
            self.step_in_block += 1
            self.global_step += 1
        while self.block_start < self.end and self.mask_token_id not in self.tokens[self.block_start:self.block_end]:
            self.block += 1
            self.step_in_block = 0
        return len(chosen)

    def committed_prefix(self) -> list[int]:
        end = min(self.prompt_len + self.params.max_tokens, self.end)
        try:
            end = min(end, self.tokens.index(self.mask_token_id, self.prompt_len))
        except ValueError:
            pass
        return self.tokens[self.prompt_len:end]

    @property
    def all_blocks_done(self) -> bool:
        """The first max_tokens positions are committed: the answer is final (the rest of the last
        block, which the official loop still decodes, is never returned)."""
        return len(self.committed_prefix()) >= self.params.max_tokens
