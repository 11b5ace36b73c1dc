"""Policy `phase`: the phase-multiplexed schedule (no tensors here).

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
`max(t(reuse), t(knee))` (`Scheduler.last_target`), the knee being where compute becomes the limit;
with CUDA graphs, only within the time the Reuse work alone takes replayed (a Refresh makes it eager).
Bounded waiting: when no Refresh fits, the oldest one is taken anyway once it has been passed over
`max_refresh_wait` times (0, the default: at once; a long prompt's Refresh, larger than any
allowance, never holds the queue), or when the iteration would otherwise be empty, evicting the
newest Reuse rows from this iteration if the token budget needs it. Reuse is never held back for a
Refresh, and no Refresh waits for more than a bounded number of iterations.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from backend.sequence import Phase, Status

if TYPE_CHECKING:
    from backend.scheduler import Batch, Scheduler


class PhasePolicy:
    def __init__(self):
        # Refresh tokens the pacing owes: each iteration adds its allowance, each Refresh taken within
        # it spends its cost. Refreshes are lumps (a whole sequence each): without the carry, an
        # allowance of 1.5 lumps takes one per iteration, and whatever is queued behind the running
        # requests' block boundaries (admissions) never gets its share.
        self.credit = 0.0

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
        allowance = (1 + cfg.refresh_spread) * self._refresh_demand(s)
        s.last_target, s.last_refresh_allowance = free_until, allowance

        candidates = sorted([r for r in s.running if r.needs_refresh] + list(s.waiting), key=lambda x: x.order)
        # The carry is capped at one iteration's allowance plus the largest pending Refresh (what one
        # lump left over may carry), and at as much debt; nothing is banked while nothing is pending.
        cap = allowance + max((r.refresh_cost for r in candidates), default=0)
        self.credit = max(-cap, min(self.credit + allowance, cap)) if candidates else 0.0
        scheduled: set[int] = set()
        for r in candidates:
            if id(r) in s.preempted_now:
                continue
            paid = r.refresh_cost <= self.credit
            fits = paid or cost.predict(refresh_tokens + r.refresh_cost, reuse_tokens, kv) <= free_until
            # Beyond the allowance only for the head of the queue (nothing taken yet): bounded wait.
            force = not scheduled and (not batch or r.refresh_wait >= cfg.max_refresh_wait)
            if not (fits or force):
                break
            if r.refresh_cost > budget:
                if not force:
                    break
                budget += self._evict_reuse(batch, r.refresh_cost - budget)  # bounded wait beats newest Reuse
                if r.refresh_cost > budget:
                    break
            if r.status == Status.WAITING:
                if len(s.running) >= cfg.max_num_seqs or not s.admit(r, batch):
                    break
            batch.append((r, Phase.REFRESH))
            scheduled.add(id(r))
            budget -= r.refresh_cost
            refresh_tokens += r.refresh_cost
            if paid or not fits:  # a free ride on a memory-bound iteration costs no credit; a forced one does
                self.credit -= r.refresh_cost
        for r in candidates:  # waiting counts only iterations a candidate was passed over
            r.refresh_wait = 0 if id(r) in scheduled else r.refresh_wait + 1
        return batch

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
    def _refresh_demand(s: Scheduler) -> float:
        """Refresh tokens per iteration that keep up with the requests running and admissible."""
        room = max(0, s.cfg.max_num_seqs - len(s.running))
        return sum(r.refresh_cost / r.refresh_period for r in itertools.chain(s.running,
                                                                            itertools.islice(s.waiting, room)))

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
