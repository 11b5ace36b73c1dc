"""Fair shares of the Refresh allowance under overload (no tensors here).

When the requests' Refresh demand exceeds what an iteration may carry beside the running Reuse work
(the refresh slice), the allowance is split max-min fairly: a request demanding less than the water
level gets all it demands, the others get the level, and the shares add up to the allowance. Each
request banks its share every iteration (up to one Refresh of its own) and may take its Refresh only
once the bank covers it, so no client's settings (block length 1, `cache: none`, huge prompts) can
take the whole allowance for long, and a heavy request still gets its turn: it banks the level every
iteration. A new request (and one preempted, which lost its cache through no fault of its own) starts
with a full bank: its first Refresh waits only for the pacing, not for a share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def water_level(demands: Sequence[float], total: float) -> float:
    """The level L with sum(min(d, L)) == total (inf when the demands fit)."""
    if sum(demands) <= total:
        return math.inf
    remaining, left = total, len(demands)
    for d in sorted(demands):
        if d * left > remaining:
            return remaining / left
        remaining -= d
        left -= 1
    return math.inf


def earn_shares(requests: Sequence, demands: Sequence[float], allowance: float, capped: bool) -> None:
    """Bank this iteration's share of `allowance` on each request. Uncapped, every bank is full (the
    pacing alone decides): fairness costs nothing until there is overload."""
    level = water_level(demands, allowance) if capped else math.inf
    for r, d in zip(requests, demands, strict=True):
        if math.isinf(level):
            r.refresh_share = r.refresh_cost
        else:
            r.refresh_share = min(r.refresh_share + min(d, level), r.refresh_cost)


def slice_tokens(cost, reuse_tokens: int, kv_bytes: int, refresh_slice: float) -> float:
    """Refresh tokens that add at most `refresh_slice` x the Reuse work's own predicted time to an
    eager iteration (at least the knee: below it Refresh rides on the weight read anyway)."""
    base = cost.predict(reuse=reuse_tokens, kv_bytes=kv_bytes)
    room = (1 + refresh_slice) * base - cost.compute(0, reuse_tokens, kv_bytes)
    return max(room / cost.per_token, float(cost.knee_tokens))
