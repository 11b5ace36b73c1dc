"""The phase-multiplexed policy, tensor-free: requests advance by simulated commits and the cost model
is the clock. Refresh work per iteration stays within its paced allowance, Reuse is never held back,
order holds within a phase, waits are bounded, and iteration times stay even through a burst; the
schedule model (benchmarks/schedule_sim) replays the engine's own iterations."""

from __future__ import annotations

import statistics

import pytest

from backend.engine.kv.page_allocator import PageAllocator
from backend.engine.request import Phase, Request, Status
from backend.engine.sampling_params import SamplingParams
from backend.engine.scheduling.cost_model import CostModel
from backend.engine.scheduling.scheduler import Scheduler, SchedulerConfig
from benchmarks.schedule_sim import advance

COST = CostModel(floor=4e-3, intercept=2e-3, per_token=2.5e-5, bandwidth=4e12)  # knee at 80 tokens
MAX_WAIT = 4


def _scheduler(max_seqs=64, budget=16384, spread=0.1) -> Scheduler:
    return Scheduler(SchedulerConfig(budget, max_seqs, "phase", spread, MAX_WAIT), PageAllocator(100000, 16),
                     COST, kv_bytes_per_position=1024)


def _request(i: int, prompt=256, gen=256, block=32) -> Request:
    return Request(str(i), [1] * prompt, SamplingParams(max_tokens=gen, block_length=block, ignore_eos=True),
                   mask_token_id=0)


def _run(s: Scheduler, arrivals: dict[int, list[Request]], check) -> list[float]:
    """Step until everything finished; `arrivals[i]` join before iteration i. Returns predicted times."""
    times, i = [], 0
    while arrivals or s.has_work():
        for r in arrivals.pop(i, []):
            s.add(r)
        ready_reuse = [r for r in s.running if not r.needs_refresh]
        before = sorted([r for r in s.running if r.needs_refresh] + list(s.waiting), key=lambda x: x.order)
        waits = {id(r): r.refresh_wait for r in before}
        batch = s.schedule()
        check(s, batch, ready_reuse, before, waits)
        refresh = sum(r.refresh_cost for r, ph in batch if ph == Phase.REFRESH)
        reuse = [r for r, ph in batch if ph == Phase.REUSE]
        kv = sum(r.cached_slots for r in reuse) * s.kv_bytes_per_position
        times.append(COST.predict(refresh, sum(r.reuse_cost for r in reuse), kv))
        advance(s, batch)
        i += 1
        assert i < 20000, "the schedule does not finish"
    return times


def _invariants(s: Scheduler, batch, ready_reuse, candidates, waits) -> None:
    reuse = [r for r, ph in batch if ph == Phase.REUSE]
    refresh = [r for r, ph in batch if ph == Phase.REFRESH]
    # Reuse is never starved by Refresh: all ready Reuse work runs (the budget here holds it all).
    assert {id(r) for r in reuse} == {id(r) for r in ready_reuse}
    # Order within the Refresh phase: the scheduled Refreshes are taken in arrival order; a candidate
    # is passed over only when it does not fit (the allowance, its fair share, the budget, the pool).
    order = [id(r) for r in candidates]
    picked = [order.index(id(r)) for r in refresh]
    assert picked == sorted(picked)
    # Refresh work stays within what the pacing carries (an allowance plus at most one lump left over)
    # or rides free under the memory-bound time, except the head of the queue taken alone (an empty
    # iteration or a long wait).
    cap = s.policy.last_refresh_allowance + max((r.refresh_cost for r in candidates), default=0)
    reuse_tokens = sum(r.reuse_cost for r in reuse)
    kv = sum(r.cached_slots for r in reuse) * s.kv_bytes_per_position
    taken = 0
    for r in refresh:
        taken += r.refresh_cost
        if taken > cap and COST.predict(taken, reuse_tokens, kv) > s.policy.last_target:
            assert r is refresh[0] and len(refresh) == 1
            assert not reuse or waits[id(r)] >= MAX_WAIT
    # The oldest candidate never waits longer than MAX_WAIT iterations (while there is room to run it).
    if candidates and (candidates[0].status == Status.RUNNING or len(s.running) < s.cfg.max_num_seqs):
        assert candidates[0].refresh_wait <= MAX_WAIT


def test_burst_spreads_refreshes_and_keeps_iterations_even():
    s = _scheduler()
    times = _run(s, {0: [_request(i) for i in range(64)]}, _invariants)
    # The goal of the issue on the cost model's clock: iteration max / median <= 1.5, ramp-up included
    # (pacing at demand gets ~1.16 here; a fixed allowance of time got 2.0 on an H200).
    assert max(times) / statistics.median(times) <= 1.2, (max(times), statistics.median(times))


def test_fcfs_burst_for_comparison_stalls_at_block_boundaries():
    """The same burst under fcfs has iterations several times its median (what `phase` removes)."""
    s = Scheduler(SchedulerConfig(16384, 64, "fcfs"), PageAllocator(100000, 16), COST, 1024)
    times = _run(s, {0: [_request(i) for i in range(64)]}, lambda *a: None)
    assert max(times) / statistics.median(times) > 3


def test_stream_of_arrivals_waits_are_bounded():
    """A request arriving every 8th iteration (about 12 of 16 slots busy on average), mixed prompt and
    output lengths: each is admitted within a bounded number of iterations, invariants hold throughout."""
    arrivals, admitted_at, arrived_at = {}, {}, {}
    for i in range(40):
        r = _request(i, prompt=[32, 256, 1024][i % 3], gen=[64, 128][i % 2])
        arrivals[8 * i] = [r]
        arrived_at[r.request_id] = 8 * i
    clock = {"it": 0, "queue": 1}

    def check(s, batch, ready, candidates, waits):
        _invariants(s, batch, ready, candidates, waits)
        for r, _ in batch:
            admitted_at.setdefault(r.request_id, clock["it"])
        clock["it"] += 1
        clock["queue"] = max(clock["queue"], len(candidates))

    _run(_scheduler(max_seqs=16, budget=4096), arrivals, check)
    waits = [admitted_at[k] - arrived_at[k] for k in arrived_at]
    # Each Refresh candidate ahead clears within MAX_WAIT + 1 iterations of reaching the head.
    assert len(waits) == 40 and max(waits) <= (MAX_WAIT + 1) * clock["queue"], (waits, clock)


def test_refresh_work_keeps_up_with_demand_plus_the_spread():
    """Refresh tokens are paced at (1 + spread) x the demand (each request running or admissible
    refreshes its whole sequence once per block of steps: 64 x 512 / 32 here): after k iterations of a
    burst's ramp-up, k allowances were spent, give or take one allowance and one Refresh."""
    admitted = []
    for spread in (0.0, 0.5, 2.0):
        s = _scheduler(spread=spread)
        for i in range(64):
            s.add(_request(i))
        allowance, spent = (1 + spread) * 64 * 512 / 32, 0
        for k in range(1, 11):
            batch = s.schedule()
            assert s.policy.last_refresh_allowance == pytest.approx(allowance)
            spent += sum(r.refresh_cost for r, ph in batch if ph == Phase.REFRESH)
            assert k * allowance - allowance - 512 <= spent <= k * allowance
            advance(s, batch)
        admitted.append(len(s.running))
    assert admitted[0] < admitted[1] < admitted[2]


def test_burst_is_admitted_at_the_pace_of_demand_and_never_collides():
    """A burst is admitted a few requests per iteration, so block boundaries never coincide again:
    after the ramp-up no Refresh waits and no iteration carries more than the allowance."""
    s = _scheduler(spread=0.1)
    waited, admitted = [], [False]

    def check(s, batch, ready, candidates, waits):
        _invariants(s, batch, ready, candidates, waits)
        if admitted[0]:  # every Refresh from here on is a block boundary of a running request
            waited.extend(waits[id(r)] for r in candidates)
        admitted[0] = not s.waiting

    _run(s, {0: [_request(i) for i in range(64)]}, check)
    assert waited and max(waited) == 0


def test_batch_invariance_under_phase(tiny64):
    """Under `phase` with a cost model that admits one Refresh at a time (spread 0, so requests
    interleave their phases as much as possible), every request's tokens equal running it alone."""
    import random

    from backend.engine.config import EngineConfig
    from backend.engine.engine import Engine

    rng = random.Random(11)
    prompts = [[rng.randrange(1, 90) for _ in range(n)] for n in (3, 17, 29, 8, 12)]
    params = [SamplingParams(max_tokens=mt, block_length=bl, ignore_eos=True, seed=i, temperature=t)
              for i, (mt, bl, t) in enumerate([(16, 4, 0.0), (24, 8, 0.7), (8, 8, 0.0), (16, 2, 0.0), (12, 4, 0.7)])]
    cfg = dict(kv_cache_bytes=4 << 20, scheduler="phase", refresh_spread=0.0, max_refresh_wait=2)
    alone = [Engine(tiny64, EngineConfig(**cfg)).generate([p], [sp])[0].token_ids
             for p, sp in zip(prompts, params, strict=True)]
    engine = Engine(tiny64, EngineConfig(**cfg))
    got, ids, pending, mixed = {}, [], list(zip(prompts, params, strict=True)), 0
    while pending or engine.has_unfinished():
        if pending and rng.random() < 0.5:
            ids.append(engine.add_request(*pending.pop(0)))
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(out.new_token_ids)
        last = engine.iteration_log[-1] if engine.iteration_log else None
        mixed += bool(last and last.refresh_tokens and last.reuse_tokens)
    assert [got[i] for i in ids] == alone
    assert mixed > 0  # Refresh and Reuse work did share iterations


def test_modelled_gpu_schedules():
    """`benchmarks.schedule_sim` on the H200 model: every request finishes after one forward per token
    (one token per step), the policies compute the same work, and `phase` keeps a burst's iterations
    within 1.5x of their median where `fcfs` and `static` spike at block boundaries and admission."""
    from benchmarks.metrics import iteration_stats
    from benchmarks.schedule_sim import H200_LLADA_8B, simulate
    from benchmarks.workloads import WorkItem

    items = [WorkItem(0.0, 256, prompt_len=256) for _ in range(64)]  # the GPU profile's burst-64
    engine, cost = {"max_num_batched_tokens": 16384, "max_num_seqs": 128}, H200_LLADA_8B.calibrated_cost(16384)
    spread = {}
    for policy in ("fcfs", "phase", "static"):
        records, iters = simulate(policy, items, H200_LLADA_8B, cost, engine, {"block_length": 32})
        assert all(r.finish is not None and r.forwards == 256 and r.first_delta <= r.finish for r in records)
        assert sum(i.reuse_tokens + i.refresh_tokens for i in iters) >= 64 * 256 * 32
        stats = iteration_stats(iters)
        spread[policy] = stats["iteration_spread"]
        # The start-up calibration prices Reuse rows as Refresh tokens (22% off); the refit from the
        # iterations (a burst's ramp grows rows and cache together) finds the device's rates.
        assert stats["cost_model_error_pct"] <= 1.0, (policy, stats)
    assert spread["phase"] <= 1.5 < min(spread["fcfs"], spread["static"]), spread


@pytest.mark.parametrize("policy", ["phase", "fcfs", "static"])
def test_schedule_model_replays_the_engines_iterations(policy):
    """The schedule model advances requests as the engine does: for the same burst, the same policy and
    cost model, it runs the very iterations the engine runs (Refresh and Reuse tokens, requests)."""
    import dataclasses
    import random

    import torch

    from backend.engine.config import EngineConfig
    from backend.engine.engine import Engine
    from backend.models import random_model
    from benchmarks.schedule_sim import H200_LLADA_8B, simulate
    from benchmarks.workloads import WorkItem

    rng = random.Random(3)
    shapes = [(rng.randrange(2, 20), rng.choice([8, 16, 24, 32])) for _ in range(7)]  # (prompt, max_tokens)
    limits = {"max_num_batched_tokens": 96, "max_num_seqs": 4}
    model = random_model("tiny-llada", dtype=torch.float32, seed=2)
    engine = Engine(model, EngineConfig(scheduler=policy, **limits))
    prompts = [[rng.randrange(1, 60) for _ in range(p)] for p, _ in shapes]
    engine.generate(prompts, [SamplingParams(max_tokens=g, block_length=8, ignore_eos=True) for _, g in shapes])
    items = [WorkItem(0.0, g, prompt_len=p) for p, g in shapes]
    device = dataclasses.replace(H200_LLADA_8B, kv_bytes_per_position=engine.scheduler.kv_bytes_per_position)
    _, iters = simulate(policy, items, device, engine.cost, limits, {"block_length": 8})
    modelled = [(i.refresh_tokens, i.reuse_tokens, i.requests, i.kv_bytes) for i in iters]
    assert modelled == [(r.refresh_tokens, r.reuse_tokens, r.requests, r.kv_bytes) for r in engine.iteration_log]
    assert any(r and u for r, u, _, _ in modelled) or policy == "static"  # phases shared iterations


def test_with_graphs_refresh_rides_free_only_within_the_replay():
    """A Refresh makes a replayable Reuse step eager: with a graph floor, the free time is the Reuse
    work replayed, not the eager floor (at small batch, a third of it); eager engines keep the knee."""
    from backend.engine.scheduling.policies import PhasePolicy

    graphs = CostModel(floor=18e-3, intercept=1.8e-3, per_token=2.1e-5, reuse_per_token=2.8e-5, bandwidth=4e12,
                       graph_floor=5.8e-3, calibrated=True)
    free = PhasePolicy._free_until(graphs, 96, 10**8, True)
    assert free == graphs.predict(reuse=96, kv_bytes=10**8, graphed=True) < graphs.floor
    assert graphs.predict(1, 96, 10**8) > free  # any Refresh costs the eager floor
    assert PhasePolicy._free_until(graphs, 0, 0, False) == graphs.floor  # nothing to replay: the knee
    # Eager: 32 Reuse rows cost the floor, as would 48 Refresh tokens with them (80: the knee).
    assert PhasePolicy._free_until(COST, 32, 0, True) == COST.floor == COST.predict(48, 32)
