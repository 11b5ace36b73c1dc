"""Which requests run in the next engine iteration, and in which phase (no tensors here).

Costs are in tokens through the model: a Refresh costs the whole sequence, a Reuse costs the block.
A request holds K/V pages from admission until it finishes or is preempted; preemption drops the
cache of the newest running request (its committed tokens stay; it resumes with a Refresh).
Policies (policies.py) are small objects that order the work; the mechanics (pages, preemption) live here.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

from backend.engine.request import Batch, Request, Status
from backend.engine.scheduling.cost_model import CostModel
from backend.engine.scheduling.policies import POLICIES


@dataclass
class SchedulerConfig:
    """The scheduler's settings, declared once: `EngineConfig` extends this class."""

    max_num_batched_tokens: int = 4096  # token budget of one iteration
    max_num_seqs: int = 64  # requests running at once
    scheduler: str = "phase"  # the policy: "phase" (phase-multiplexed) | "fcfs" | "static" (baselines)
    refresh_spread: float = 0.1  # phase: Refresh allowance per iteration beyond what keeps up with demand
    max_refresh_wait: int = 0  # phase: passes before the oldest pending Refresh is taken beyond the allowance
    # phase: Refresh work an iteration may add beside running Reuse work, in multiples of that work's own
    # predicted time, when demand exceeds it (a decoding request's slowdown under any load <= 1 + this)
    refresh_slice: float = 2.0
    reserve_after: int = 16  # phase: passes over a request that does not fit the K/V pool before it reserves it

    def __post_init__(self):
        if self.max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens: must be >= 1, got {self.max_num_batched_tokens}")
        if self.max_num_seqs < 1:
            raise ValueError(f"max_num_seqs: must be >= 1, got {self.max_num_seqs}")
        if self.scheduler not in POLICIES:
            raise ValueError(f"scheduler: unknown policy {self.scheduler!r}; known: {sorted(POLICIES)}")
        if self.refresh_spread < 0:
            raise ValueError(f"refresh_spread: must be >= 0, got {self.refresh_spread}")
        if self.max_refresh_wait < 0:
            raise ValueError(f"max_refresh_wait: must be >= 0, got {self.max_refresh_wait}")
        if not self.refresh_slice > 0 or math.isinf(self.refresh_slice):
            raise ValueError(f"refresh_slice: must be a finite number > 0, got {self.refresh_slice}")
        if self.reserve_after < 0:
            raise ValueError(f"reserve_after: must be >= 0, got {self.reserve_after}")


class Scheduler:
    def __init__(self, cfg: SchedulerConfig, cache, cost: CostModel | None = None,
                 kv_bytes_per_position: int = 0):
        self.cfg = cfg
        # Reserves and releases K/V pages (a KVPool, or a PageAllocator in tensor-free models; None: no
        # pool): the same small interface, see backend/engine/kv/page_allocator.py.
        self.cache = cache
        self.cost = cost or CostModel()  # predicted iteration time (the `phase` policy's budget)
        self.kv_bytes_per_position = kv_bytes_per_position  # cached K/V of one position, all layers and heads
        self.policy = POLICIES[cfg.scheduler]()
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.num_preemptions = 0
        self.preempted_now: set[int] = set()  # ids of requests preempted in the current pass
        self._order = itertools.count()

    # --- queue changes --------------------------------------------------------------------------
    def check_fits(self, r: Request) -> None:
        """Reject at once a request that could never be scheduled (instead of queueing it forever)."""
        if r.refresh_cost > self.cfg.max_num_batched_tokens:
            raise ValueError(f"max_tokens: prompt ({r.prompt_len}) + max_tokens ({r.params.max_tokens}) = "
                             f"{r.refresh_cost} tokens exceed max_num_batched_tokens={self.cfg.max_num_batched_tokens}")
        if self.cache is not None and self.cache.pages_for(r.cached_slots) > self.cache.num_pages:
            raise ValueError(f"max_tokens: the request needs {self.cache.pages_for(r.cached_slots)} K/V pages,"
                             f" the pool has {self.cache.num_pages}")

    def add(self, r: Request) -> None:
        """Queue a request that `check_fits` passed (the engine's `validate` checks it, once)."""
        r.status = Status.WAITING
        r.order = next(self._order)
        self.waiting.append(r)

    def remove(self, r: Request) -> None:
        """Take a request out of the queues (finished or aborted) and free its pages."""
        if r in self.running:
            self.running.remove(r)
        elif r in self.waiting:
            self.waiting.remove(r)
        self._drop_cache(r)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # --- scheduling -----------------------------------------------------------------------------
    def schedule(self) -> Batch:
        return self.policy.schedule(self)

    def admit(self, r: Request, batch: Batch) -> bool:
        """Move a waiting request to running if its K/V fits (preempting newer ones if need be)."""
        if not self._acquire_pages(r, batch):
            return False
        self.waiting.remove(r)
        self.running.append(r)
        self.running.sort(key=lambda x: x.order)
        r.status = Status.RUNNING
        return True

    def _acquire_pages(self, r: Request, batch: Batch) -> bool:
        slots = r.cached_slots
        if self.cache is None or slots == 0:
            return True
        in_batch = {id(x) for x, _ in batch}
        while not self.cache.can_reserve(slots):
            victims = [x for x in self.running if x.order > r.order and id(x) not in in_batch
                       and self.cache.holds(x.request_id)]
            if not victims:
                return False
            # Newest first, but a request about to Refresh anyway loses nothing (not even answer
            # stability: its next step rebuilds the cache either way), so it goes before the rest.
            at_refresh = [x for x in victims if x.needs_refresh]
            self.preempt((at_refresh or victims)[-1])
        self.cache.reserve(r.request_id, slots)
        return True

    def preempt(self, r: Request) -> None:
        """Drop a running request's cache and send it back to the waiting queue in arrival order."""
        if r not in self.running:
            return
        self.running.remove(r)
        self._drop_cache(r)
        r.status = Status.WAITING
        r.refresh_share = math.inf  # it lost its cache through no fault of its own: its Refresh is paid
        r.num_preemptions += 1
        self.num_preemptions += 1
        self.preempted_now.add(id(r))
        older = [x for x in self.waiting if x.order <= r.order]
        self.waiting.insert(len(older), r)

    def _drop_cache(self, r: Request) -> None:
        r.cached_block = None
        if self.cache is not None:
            self.cache.release(r.request_id)

    def kv_bytes_read(self, r: Request) -> int:
        """Cached K/V a Reuse step of `r` attends to (what the cost model charges beyond the weights)."""
        return r.cached_slots * self.kv_bytes_per_position
