"""Policy `phase`: the phase-multiplexed schedule (no tensors here).

Every iteration first takes all the Reuse work that is ready (one weight read serves it all), then
adds Refresh work (block starts, resumes after preemption, admissions) in arrival order while the
cost model predicts that the iteration stays under its target:

    target = max(t(reuse), t(knee), (1 + refresh_spread) * t(steady))

`t(steady)` is the average iteration of the requests running (or admissible): each costs its Reuse
rows on most steps and its whole sequence once per Refresh period (its block's steps). Pacing at it
gives every iteration the share of Refresh work that keeps up with demand, so a burst's requests,
which all reach block boundaries together, drift apart (a Refresh that waits shifts that request's
phase) until iterations are even; a larger allowance lets Refreshes cluster again, leaving
iterations bimodal (pure Reuse vs Reuse + several Refreshes: 2x apart on an H200 with 0.5 of a
full Reuse iteration as allowance). `t(knee)` lets Refresh tokens ride free on a memory-bound
iteration. Bounded waiting: the oldest Refresh candidate is taken anyway once it has waited
`max_refresh_wait` iterations (0, the default: every iteration takes at least the oldest, so a
long prompt's Refresh, larger than any target, never holds the queue), or when the iteration would
otherwise be empty, evicting the newest Reuse rows from this iteration if the token budget needs it.
Reuse is never held back for a Refresh that fits, and no Refresh waits for more than a bounded
number of iterations.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

from backend.sequence import Phase, Status

if TYPE_CHECKING:
    from backend.scheduler import Batch, Scheduler

class PhasePolicy:
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
        tokens = cfg.max_num_batched_tokens - budget
        target = max(cost.predict(tokens, kv), cost.predict(cost.knee_tokens, kv),
                     (1 + cfg.refresh_spread) * self._steady_time(s))
        s.last_target = target

        candidates = sorted([r for r in s.running if r.needs_refresh] + list(s.waiting), key=lambda x: x.order)
        scheduled: set[int] = set()
        for r in candidates:
            if id(r) in s.preempted_now:
                continue
            fits = cost.predict(tokens + r.refresh_cost, kv) <= target
            # Over the target only for the head of the queue (nothing taken yet): bounded wait, not extra work.
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
            tokens += r.refresh_cost
        for r in candidates:  # waiting counts only iterations a candidate was passed over
            r.refresh_wait = 0 if id(r) in scheduled else r.refresh_wait + 1
        return batch

    @staticmethod
    def _steady_time(s: Scheduler) -> float:
        """Predicted time of an average iteration of the requests that are (or could be) running: each
        costs its Reuse rows on most steps and its Refresh once per Refresh period. An iteration
        paced at this carries just the Refresh work that keeps up, whatever the phases."""
        room = max(0, s.cfg.max_num_seqs - len(s.running))
        population = [*s.running, *itertools.islice(s.waiting, room)]
        tokens = sum(r.steady_tokens() for r in population)
        kv = sum(s.kv_bytes_read(r) * (1 - 1 / r.refresh_period) for r in population)
        return s.cost.predict(min(int(tokens), s.cfg.max_num_batched_tokens), int(kv))

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
