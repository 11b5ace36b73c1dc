"""Per-request decoding state: tokens, block and step counters, phase, streaming cursor (no tensors)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from backend.engine.denoise import dream_schedule, origin_transfer_probability, transfer_schedule
from backend.engine.sampling_params import SamplingParams


class Phase(enum.Enum):
    REFRESH = "refresh"  # whole sequence through the model; rebuilds this request's cached K/V
    REUSE = "reuse"  # only the current block; attends to the cached K/V of every other position


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass
class Request:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    mask_token_id: int
    logit_shift: int = 0  # Dream: the hidden state of position p-1 predicts position p
    order: int = 0  # admission order, set by the scheduler (strict, unlike clock readings)

    tokens: list[int] = field(init=False)
    block: int = 0
    step_in_block: int = 0
    global_step: int = 0  # steps taken over the whole request: the noise counter
    forwards: int = 0
    streamed: int = 0  # generation tokens already sent as deltas
    status: Status = Status.WAITING
    finish_reason: str | None = None
    error: str | None = None
    cached_block: int | None = None  # the block whose cache the K/V pool holds (None: no cache)
    retention: float = 1.0  # share of cacheable positions each KV head keeps (set by the engine; 1 = dense)
    min_kept: int = 0  # sparse: positions each KV head keeps at least (the engine sets one page)
    num_preemptions: int = 0
    refresh_wait: int = 0  # iterations this request's pending Refresh was passed over (phase policy)
    refresh_share: float = math.inf  # phase under overload: Refresh tokens banked (scheduling/fair_share.py); inf: full
    _quotas: list[int] | None = None
    # params.logprobs set: position -> (logprob, rank, alternatives) read at the step that committed it
    logprob_at: dict[int, tuple] | None = None

    def __post_init__(self):
        self.tokens = list(self.prompt_ids) + [self.mask_token_id] * self.params.max_tokens
        if self.params.logprobs is not None:
            self.logprob_at = {}

    # --- geometry -------------------------------------------------------------------------------
    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def seq_len(self) -> int:
        return len(self.tokens)

    @property
    def block_start(self) -> int:
        return self.prompt_len + self.block * self.params.block_length

    @property
    def block_end(self) -> int:
        return self.block_start + self.params.block_length

    @property
    def computed_range(self) -> tuple[int, int]:
        """Rows a Reuse step recomputes: the block, plus the row before it when predictions shift."""
        return self.block_start - self.logit_shift, self.block_end

    def masked_positions(self) -> list[int]:
        return [p for p in range(self.block_start, self.block_end) if self.tokens[p] == self.mask_token_id]

    # --- phase and cost (what the scheduler needs) --------------------------------------------
    @property
    def needs_refresh(self) -> bool:
        p = self.params
        if p.cache == "none" or self.cached_block != self.block or self.step_in_block == 0:
            return True
        return p.refresh_interval is not None and self.step_in_block % p.refresh_interval == 0

    @property
    def refresh_cost(self) -> int:
        return self.seq_len

    @property
    def reuse_cost(self) -> int:
        """Rows of `computed_range` (asked several times per request per iteration: kept arithmetic)."""
        return self.params.block_length + self.logit_shift

    @property
    def refresh_period(self) -> int:
        """Steps from one Refresh of this request to the next (its block's steps, or the refresh interval)."""
        p = self.params
        if p.cache == "none":
            return 1
        # Threshold decoding decides its steps as it goes: a quarter of the block is a typical count.
        steps = p.steps_per_block or (max(1, p.block_length // 4) if p.threshold is not None else p.block_length)
        return max(1, min(steps, p.refresh_interval or steps))

    def step_cost(self) -> int:
        return self.refresh_cost if self.needs_refresh else self.reuse_cost

    @property
    def cacheable(self) -> int:
        """Positions outside the recomputed rows: what a dense cache holds."""
        return 0 if self.params.cache == "none" else self.seq_len - self.reuse_cost

    def cacheable_positions(self) -> list[int]:
        """The positions a Refresh may cache, ascending: all but the rows a Reuse step recomputes."""
        lo, hi = self.computed_range
        return [*range(0, lo), *range(hi, self.seq_len)] if self.params.cache != "none" else []

    @property
    def sparse(self) -> bool:
        return self.retention < 1.0

    @property
    def cached_slots(self) -> int:
        """K/V slots per KV head: every cacheable position, or ceil(retention x that) when sparse, but at
        least `min_kept` (one page: pages are allocated whole, so fewer slots would save no memory)."""
        n = self.cacheable
        return n if not self.sparse else min(n, max(self.min_kept, math.ceil(self.retention * n)))

    # --- denoising bookkeeping ------------------------------------------------------------------
    def quota(self) -> int | None:
        """Tokens this step commits (None under threshold decoding and Dream's origin): LLaDA's linear
        schedule, or Dream's timestep schedule (params resolved for the family: Dream's have an alg)."""
        p = self.params
        if p.threshold is not None or p.alg == "origin":
            return None
        if self._quotas is None:
            self._quotas = (transfer_schedule(p.block_length, p.steps_per_block) if p.alg is None
                            else dream_schedule(p.block_length, p.steps_per_block, p.eps))
        return self._quotas[self.step_in_block]

    def transfer_p(self) -> float | None:
        """Dream's origin: the probability that a masked position gets its token this step."""
        p = self.params
        if p.alg != "origin" or p.threshold is not None:
            return None
        return origin_transfer_probability(self.step_in_block, p.steps_per_block, p.eps)

    def commit(self, positions: list[int], token_ids: list[int], logprobs: list[tuple] | None = None) -> None:
        for p, t in zip(positions, token_ids, strict=True):
            self.tokens[p] = t
        if self.logprob_at is not None and logprobs is not None:
            k = self.params.logprobs
            for p, (lp, rank, top) in zip(positions, logprobs, strict=True):
                self.logprob_at[p] = (lp, rank, top[:k])
        self.step_in_block += 1
        self.global_step += 1
        if all(self.tokens[p] != self.mask_token_id for p in range(self.block_start, self.block_end)):
            self.block += 1
            self.step_in_block = 0
            self._quotas = None

    def logprobs_of(self, start: int, end: int) -> list[tuple] | None:
        """The log-probability entries of generation tokens start..end (None: not asked for)."""
        if self.logprob_at is None:
            return None
        return [self.logprob_at[self.prompt_len + i] for i in range(start, end)]

    def committed_prefix(self) -> list[int]:
        """The generation up to its first [MASK] (list.index: C speed, called for every request every step)."""
        try:
            end = self.tokens.index(self.mask_token_id, self.prompt_len)
        except ValueError:
            end = len(self.tokens)
        return self.tokens[self.prompt_len:end]

    @property
    def all_blocks_done(self) -> bool:
        return self.block >= self.params.num_blocks

    @property
    def is_finished(self) -> bool:
        return self.status == Status.FINISHED


Batch = list[tuple[Request, Phase]]  # one iteration's work: each request with its phase
