"""The scheduling policies side by side (no tensors here): `phase` (the default), `fcfs`, `static`.

Policy `phase`: the phase-multiplexed schedule.

Every iteration first takes all the Reuse work that is ready (one weight read serves it all), then
adds Refresh work (block starts, resumes after preemption, admissions) in arrival order while it is
within the iteration's Refresh allowance:

    allowance = (1 + refresh_spread) x sum over the population of refresh_cost / refresh_period

The population is the requests running plus those that could be admitted; each needs one Refresh
of its whole sequence per Refresh period (its block's steps), so the sum is the Refresh work per
iteration that keeps up with demand; what an iteration leaves unspent carries to the next (at most
one Refresh's worth: Refreshes are lumps). Pacing at it spreads the population's Refreshes evenly over
the period: a burst is admitted a few requests per iteration, so its requests reach their block
boundaries at different iterations and every iteration carries about the same work. (Filling each
iteration up to a time target instead, as this policy first did, admits a burst faster but leaves
its requests clustered: their boundaries then collide every period, and iterations alternate
between pure Reuse and Reuse + several Refreshes, 2x apart on an H200.)

Refresh tokens also ride free while the cost model predicts the iteration is memory-bound:
`max(t(reuse), t(knee))` (`last_target`), the knee being where compute becomes the limit;
with CUDA graphs, only within the time the Reuse work alone takes replayed (a Refresh makes it eager).

Fair progress under overload (`backend/engine/scheduling/fair_share.py`). Requests that refresh every step (block
length 1, `cache: none`) can demand more Refresh work than any iteration holds. While requests are
decoding (Reuse work in this iteration, or a request running or admissible that steps between
Refreshes), the Refresh work of running requests, and of admissions that would refresh more than
their share of the budget (1 / max_num_seqs of it) per iteration, is capped at the `refresh_slice`: what adds at most
`refresh_slice` x the Reuse work's own predicted time. Decoding requests then step at a bounded
slowdown (<= 1 + refresh_slice on the cost model's clock) however heavy the queue; normal admissions
stay paced at their demand, and with nobody decoding, demand is served as it is. Under the cap each
running request banks its max-min fair share of the capped allowance every iteration (light
requests all they demand, heavy ones an equal rest), and the fullest bank relative to its Refresh
goes first, the smaller Refresh among full ones: heavy requests take turns and a short one's block
start is not queued behind them. A candidate that does not fit (the allowance, the token budget, the
K/V pool, the running-request limit) is skipped, not waited for; one passed over `reserve_after`
times for lack of pages reserves them: nothing behind it is admitted until it is. Bounded waiting:
the first candidate in order is taken beyond the allowance when the iteration would otherwise be
empty, or once passed over `max_refresh_wait` times (0, the default: at once) unless the capped
pacing is in debt, evicting the newest Reuse rows from this iteration if the token budget needs it.

Chunked prefill (block-diffusion requests, `fit_chunk`): beside Reuse work, a prefill chunk is sized
to what the iteration still holds under max(the memory-bound time, (1 + refresh_slice) x the Reuse
work's time), in whole blocks and at least one, and taken; alone, it is the request's full chunk. A
prefill thus advances every iteration (no starvation) without stretching a denoising step beyond
that target (by more than one block when not even one fits).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from backend.engine.request import Batch, Phase, Request, Status
from backend.engine.scheduling.fair_share import earn_shares, slice_tokens

if TYPE_CHECKING:
    from backend.engine.scheduling.scheduler import Scheduler


class PhasePolicy:
    def __init__(self):
        # Refresh tokens the pacing owes: each iteration adds its allowance, each Refresh taken within
        # it spends its cost. Refreshes are lumps (a whole sequence each): without the carry, an
        # allowance of 1.5 lumps takes one per iteration, and whatever is queued behind the running
        # requests' block boundaries (admissions) never gets its share.
        self.credit = 0.0
        self.capped = False  # the last allowance was cut to the refresh slice (fair shares enforced)
        self.last_target: float | None = None  # the iteration time under which Refresh rides free
        self.last_refresh_allowance: float | None = None  # the last iteration's Refresh tokens allowance

    def schedule(self, s: Scheduler) -> Batch:
        cfg, cost = s.cfg, s.cost
        s.preempted_now.clear()
        budget = cfg.max_num_batched_tokens
        batch: Batch = []
        kv = 0
        for r in sorted(s.running, key=lambda x: x.order):
            if len(batch) >= cfg.max_num_seqs:
                break
            if not r.needs_refresh and r.reuse_cost <= budget:
                batch.append((r, Phase.REUSE))
                budget -= r.reuse_cost
                kv += s.kv_bytes_read(r)
        reuse_tokens, refresh_tokens = cfg.max_num_batched_tokens - budget, 0
        free_until = self._free_until(cost, reuse_tokens, kv, bool(batch))
        allowance = self._allowance(s, cost, reuse_tokens, kv, bool(batch))
        self.last_target, self.last_refresh_allowance = free_until, allowance

        # Under the cap the fullest bank (relative to its Refresh) goes first, the smaller Refresh among
        # full ones (work-conserving deficit round robin). Otherwise arrival order.
        candidates = sorted([r for r in s.running if r.needs_refresh] + list(s.waiting), key=lambda x: x.order)
        if self.capped:
            candidates.sort(key=lambda x: (-min(x.refresh_share / x.refresh_cost, 1.0), x.refresh_cost))
        # The carry is capped at one iteration's allowance plus the largest pending Refresh (what one
        # lump left over may carry), and at as much debt; nothing is banked while nothing is pending.
        carry = allowance + max((r.refresh_cost for r in candidates), default=0)
        self.credit = max(-carry, min(self.credit + allowance, carry)) if candidates else 0.0
        scheduled: set[int] = set()
        head = True  # the first eligible candidate: the only one ever taken beyond the allowance
        for r in candidates:
            if id(r) in s.preempted_now:
                continue
            # A chunked prefill (block diffusion) beside denoising steps: sized to the iteration's target.
            sized = reuse_tokens > 0 and hasattr(r, "fit_chunk")
            if hasattr(r, "fit_chunk"):
                room = self._room(cost, cfg, refresh_tokens, reuse_tokens, kv, free_until) if sized else None
                if not r.fit_chunk(room) and refresh_tokens:
                    continue  # not one block fits beside what is taken (the first one always goes)
            paid = r.refresh_cost <= self.credit
            fits = sized or paid or cost.predict(refresh_tokens + r.refresh_cost, reuse_tokens, kv) <= free_until
            force = head and not scheduled and (
                not batch or (r.refresh_wait >= cfg.max_refresh_wait and (not self.capped or self.credit >= 0)))
            head = False
            if not (fits or force):
                continue
            if r.refresh_cost > budget:
                if force:  # bounded wait beats the newest Reuse
                    budget += self._evict_reuse(batch, r.refresh_cost - budget)
                if r.refresh_cost > budget:
                    continue
            if r.status == Status.WAITING:
                if len(s.running) >= cfg.max_num_seqs:
                    continue
                if not s.admit(r, batch):
                    if r.refresh_wait >= cfg.reserve_after:
                        break  # its pages come first: admit nothing behind it
                    continue
            batch.append((r, Phase.REFRESH))
            scheduled.add(id(r))
            budget -= r.refresh_cost
            refresh_tokens += r.refresh_cost
            r.refresh_share = min(r.refresh_share, r.refresh_cost) - r.refresh_cost
            if paid or not fits:  # a free ride on a memory-bound iteration costs no credit; a forced one does
                self.credit -= r.refresh_cost
        for r in candidates:  # waiting counts only iterations a candidate was passed over
            r.refresh_wait = 0 if id(r) in scheduled else r.refresh_wait + 1
        return batch

    def _allowance(self, s: Scheduler, cost, reuse_tokens: int, kv: int, has_reuse: bool) -> float:
        """This iteration's Refresh allowance; under the slice (`self.capped`), banks each running
        request's fair share of it."""
        cfg = s.cfg
        spread, share = 1 + cfg.refresh_spread, cfg.max_num_batched_tokens / cfg.max_num_seqs
        running = list(s.running)
        admissible = list(s.waiting)[:max(0, cfg.max_num_seqs - len(running))]
        # Decoding requests to protect: Reuse work now, or a request running or admissible that steps
        # between its Refreshes (its next steps are Reuse: its admission must not wait for a heavy
        # iteration either).
        protect = has_reuse or any(r.refresh_period > 1 for r in (*running, *admissible))
        heavy = [r for r in admissible if protect and r.refresh_cost / r.refresh_period > share]
        demand = [spread * r.refresh_cost / r.refresh_period for r in running]
        bounded = sum(demand) + sum(spread * r.refresh_cost / r.refresh_period for r in heavy)
        others = sum(spread * r.refresh_cost / r.refresh_period for r in admissible) - (bounded - sum(demand))
        cap = slice_tokens(cost, reuse_tokens, kv, cfg.refresh_slice) if protect else math.inf
        self.capped = bounded > cap
        # Waiting requests have had nothing yet: their banks stay full; running ones share the slice.
        earn_shares(running, demand, min(sum(demand), cap), self.capped)
        return min(bounded, cap) + others

    @staticmethod
    def _room(cost, cfg, refresh_tokens: int, reuse_tokens: int, kv: int, free_until: float) -> int:
        """Refresh tokens this iteration still holds beside its Reuse work: up to the memory-bound time,
        or the refresh slice (a decoding request's slowdown <= 1 + refresh_slice), whichever is longer."""
        limit = max(free_until, (1 + cfg.refresh_slice) * cost.predict(reuse=reuse_tokens, kv_bytes=kv))
        lo, hi = 0, cfg.max_num_batched_tokens
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if cost.predict(refresh_tokens + mid, reuse_tokens, kv) <= limit:
                lo = mid
            else:
                hi = mid - 1
        return lo

    @staticmethod
    def _free_until(cost, reuse_tokens: int, kv: int, has_reuse: bool) -> float:
        """The predicted time Refresh tokens may fill for free. Eager: the Reuse work's own time, and
        at least the floor up to the knee (launches cost it anyway). With CUDA graphs the Reuse work
        alone replays a graph: a Refresh joining makes the step eager, so only what fits in the
        replay's time is free (seldom anything: the eager floor is ~3x a replay at small batch)."""
        if has_reuse and cost.graph_floor is not None:
            return cost.predict(reuse=reuse_tokens, kv_bytes=kv, graphed=True)
        return max(cost.predict(reuse=reuse_tokens, kv_bytes=kv), cost.predict(cost.knee_tokens, kv_bytes=kv))

    @staticmethod
    def _evict_reuse(batch: Batch, need: int) -> int:
        """Drop the newest Reuse entries until `need` tokens are free; returns the tokens freed."""
        freed = 0
        for i in range(len(batch) - 1, -1, -1):
            if freed >= need:
                break
            r, ph = batch[i]
            if ph == Phase.REUSE:
                freed += r.reuse_cost
                del batch[i]
        return freed


def phase_of(r: Request) -> Phase:
    return Phase.REFRESH if r.needs_refresh else Phase.REUSE


class FCFSPolicy:
    """All requests in arrival order under the token budget: a running one takes its step, a waiting
    one is admitted if its K/V fits (an older request resuming after preemption may preempt newer
    ones). A request that does not fit the budget is skipped, not waited for (no head-of-line
    blocking); admission stops at the first request whose K/V does not fit, so large requests are
    not starved by small ones."""

    def schedule(self, s: Scheduler) -> Batch:
        budget, batch, admitting = s.cfg.max_num_batched_tokens, [], True
        s.preempted_now.clear()
        for r in sorted([*s.running, *s.waiting], key=lambda x: x.order):
            if len(batch) >= s.cfg.max_num_seqs:
                break
            if r.status == Status.RUNNING:
                cost = r.step_cost()
                if cost <= budget:
                    batch.append((r, phase_of(r)))
                    budget -= cost
                continue
            # Waiting. Requests preempted during this very pass are not taken back at once.
            if not admitting or id(r) in s.preempted_now:
                continue
            if len(s.running) >= s.cfg.max_num_seqs or r.refresh_cost > budget:
                continue
            if not s.admit(r, batch):
                admitting = False
                continue
            batch.append((r, Phase.REFRESH))
            budget -= r.refresh_cost
        return batch


class StaticPolicy:
    """The research-loop baseline: a fixed batch is admitted only when the previous one has finished
    entirely, and every member steps in every iteration (no token budget)."""

    def schedule(self, s: Scheduler) -> Batch:
        if not s.running:
            for r in list(s.waiting):
                if len(s.running) >= s.cfg.max_num_seqs or not s.admit(r, []):
                    break
        return [(r, phase_of(r)) for r in s.running]


POLICIES = {"phase": PhasePolicy, "fcfs": FCFSPolicy, "static": StaticPolicy}
