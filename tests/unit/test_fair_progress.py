"""Fair progress under heavy load (issue 20), tensor-free: requests advance by simulated commits and
the cost model is the clock. A short request behind a queue of requests that refresh every step
(block length 1) finishes within a small multiple of its time alone plus one heavy iteration; every
heavy request still finishes; a request that does not fit is skipped, not waited for, until it has
been passed over long enough to reserve the pool; the Refresh allowance is shared max-min fairly."""

from __future__ import annotations

import math
import random

import pytest

from backend.engine.kv.page_allocator import PageAllocator
from backend.engine.request import Phase, Request
from backend.engine.sampling_params import SamplingParams
from backend.engine.scheduling.cost_model import CostModel
from backend.engine.scheduling.fair_share import water_level
from backend.engine.scheduling.scheduler import Scheduler, SchedulerConfig
from benchmarks.schedule_sim import advance

COST = CostModel()  # the bundled model on a 2-core CPU: 3 ms floor, 115 us a token


def _scheduler(pages=100000, budget=4096, max_seqs=64, policy="phase") -> Scheduler:
    return Scheduler(SchedulerConfig(budget, max_seqs, policy), PageAllocator(pages, 16), COST, 1024)


def _heavy(i: int, gen=448) -> Request:
    return Request(f"heavy{i}", [1] * 12, SamplingParams(max_tokens=gen, block_length=1, ignore_eos=True), 0)


def _short(name="short", prompt=10, gen=32) -> Request:
    return Request(name, [1] * prompt, SamplingParams(max_tokens=gen, block_length=16, steps=gen, ignore_eos=True),
                   0)


def _run(s: Scheduler, arrivals: dict[int, list[Request]], limit=20000) -> tuple[dict, list[float]]:
    """Step until all finished; returns {request_id: (first iteration time, finish time)} on the cost
    model's clock, and every iteration's predicted time."""
    clock, times, seen, i = 0.0, [], {}, 0
    while arrivals or s.has_work():
        for r in arrivals.pop(i, []):
            s.add(r)
            seen[r.request_id] = [clock, None, None]
        batch = s.schedule()
        refresh = sum(r.refresh_cost for r, ph in batch if ph == Phase.REFRESH)
        reuse = [r for r, ph in batch if ph == Phase.REUSE]
        t = COST.predict(refresh, sum(r.reuse_cost for r in reuse), sum(r.cached_slots for r in reuse) * 1024)
        clock += t
        times.append(t)
        for r, _ in batch:
            seen[r.request_id][1] = seen[r.request_id][1] or clock
        for r in advance(s, batch):
            seen[r.request_id][2] = clock
        i += 1
        assert i < limit, "the schedule does not finish"
    return {k: (first - arrived, done - arrived) for k, (arrived, first, done) in seen.items()}, times


def _alone(make) -> float:
    return _run(_scheduler(), {0: [make()]})[0]["short"][1]


@pytest.mark.parametrize("n_heavy", [9, 16, 32])
def test_short_request_behind_heavy_queue_finishes_within_bound(n_heavy):
    alone = _alone(_short)
    arrivals = {0: [_heavy(i) for i in range(n_heavy)], 5: [_short()]}
    done, times = _run(_scheduler(), arrivals)
    heavy_iteration = max(times)
    first, finish = done["short"]
    assert first <= 2 * heavy_iteration, (first, heavy_iteration)
    assert finish <= 5 * alone + heavy_iteration, (n_heavy, finish, alone, heavy_iteration)
    assert all(done[f"heavy{i}"][1] is not None for i in range(n_heavy))  # every heavy request finishes


def test_without_the_slice_the_short_request_starves():
    """The same queue under `fcfs` (arrival order, no slice): the short request waits for heavy requests'
    lifetimes, many times the bound; this is what the test above guards against."""
    alone = _alone(_short)
    arrivals = {0: [_heavy(i) for i in range(16)], 5: [_short()]}
    done, times = _run(_scheduler(policy="fcfs"), arrivals)
    assert done["short"][1] > 4 * (5 * alone + max(times))


def test_heavy_requests_progress_under_a_stream_of_short_ones():
    """Short requests arriving every iteration keep Reuse work running all the time: the heavy ones
    still get their slice of every iteration and finish (no starvation of the big by the small)."""
    arrivals = {0: [_heavy(0, gen=64), _heavy(1, gen=64)]}
    for i in range(1, 600):
        arrivals[i] = [_short(f"s{i}", gen=16)]
    done, times = _run(_scheduler(), arrivals)
    # Both heavy requests finished long before the stream ended: they were not postponed to its end.
    assert max(done["heavy0"][1], done["heavy1"][1]) < 0.5 * sum(times)
    shorts = [done[f"s{i}"][1] for i in range(1, 600)]
    assert max(shorts) < 5 * min(shorts)


def test_a_request_that_does_not_fit_the_pool_is_skipped_then_reserves_it():
    """A request too large for the free pages does not hold back smaller ones behind it; once passed
    over `reserve_after` times, nothing behind it is admitted until it is, so it is not starved."""
    s = _scheduler(pages=40)  # 640 positions
    s.add(_short("hog", prompt=300, gen=128))  # 412 cached positions: 26 pages
    s.add(_short("big", prompt=300, gen=32))  # does not fit beside the hog
    small = [_short(f"small{i}", prompt=10, gen=32) for i in range(6)]
    for r in small:
        s.add(r)
    big = next(r for r in s.waiting if r.request_id == "big")
    skipped_for, reserved_for, it = set(), set(), 0
    while big.status.value == "waiting":
        aged = big.refresh_wait >= s.cfg.reserve_after
        batch = s.schedule()
        admitted = {r.request_id for r, ph in batch if ph == Phase.REFRESH and r.forwards == 0} - {"big"}
        (reserved_for if aged else skipped_for).update(admitted)
        advance(s, batch)
        it += 1
        assert it < 1000, "the large request is never admitted"
    assert skipped_for & {r.request_id for r in small}  # skipped at first: smaller ones went ahead
    assert not reserved_for  # then nothing behind it was admitted until it was


def test_water_level_is_max_min_fair():
    rng = random.Random(5)
    for _ in range(200):
        demands = [rng.choice([rng.uniform(0, 5), rng.uniform(50, 500)]) for _ in range(rng.randint(1, 20))]
        total = rng.uniform(0, 1.2 * sum(demands))
        level = water_level(demands, total)
        if sum(demands) <= total:
            assert math.isinf(level)
            continue
        shares = [min(d, level) for d in demands]
        assert sum(shares) == pytest.approx(total)
        # Light requests get all they ask for; every capped one gets the same, no less than any other.
        assert all(s == pytest.approx(level) for s, d in zip(shares, demands, strict=True) if d > level)
