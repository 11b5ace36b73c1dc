"""Scheduler, K/V pool and preemption: budgets, admission, page accounting, resume exactness."""

from __future__ import annotations

import random

import pytest
import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.kv.page_allocator import OutOfPages, PageAllocator
from backend.engine.kv.pool import KVPool
from backend.engine.request import Phase, Request
from backend.engine.runner.model_runner import ModelRunner
from backend.engine.sampling_params import SamplingParams
from backend.engine.scheduling.scheduler import Scheduler, SchedulerConfig
from backend.oracle.reference import generate

MiB = 1 << 20


def _req(rid, prompt_len, max_tokens=8, block=4, **kw) -> Request:
    return Request(rid, list(range(1, prompt_len + 1)), SamplingParams(max_tokens=max_tokens, block_length=block, **kw),
                   mask_token_id=127)


def test_allocator_accounting():
    a = PageAllocator(4, 16)
    assert a.pages_for(33) == 3 and a.can_reserve(64) and not a.can_reserve(65)
    a.reserve("x", 20)
    assert a.num_used == 2 and a.holds("x")
    with pytest.raises(OutOfPages):
        a.reserve("y", 40)
    assert a.release("x") == 2 and a.num_used == 0


def test_token_budget_without_head_of_line_blocking():
    s = Scheduler(SchedulerConfig(max_num_batched_tokens=40, max_num_seqs=8, scheduler="fcfs"), PageAllocator(100, 4))
    big, small1, small2 = _req("big", 40), _req("s1", 4), _req("s2", 4)  # refresh costs 48, 12, 12
    s.cfg.max_num_batched_tokens = 48
    s.add(big)
    s.add(small1)
    s.add(small2)
    s.cfg.max_num_batched_tokens = 30
    batch = s.schedule()
    assert [(r.request_id, ph) for r, ph in batch] == [("s1", Phase.REFRESH), ("s2", Phase.REFRESH)]
    assert sum(r.step_cost() for r, _ in batch) <= 30
    assert [r.request_id for r in s.waiting] == ["big"]


def test_static_policy_runs_fixed_batches():
    cfg = SchedulerConfig(max_num_batched_tokens=1000, max_num_seqs=2, scheduler="static")
    s = Scheduler(cfg, PageAllocator(100, 4))
    for i in range(3):
        s.add(_req(f"r{i}", 5))
    assert [r.request_id for r, _ in s.schedule()] == ["r0", "r1"]
    s.remove(s.running[0])
    assert [r.request_id for r, _ in s.schedule()] == ["r1"]  # r2 waits for the whole batch to finish
    s.remove(s.running[0])
    assert [r.request_id for r, _ in s.schedule()] == ["r2"]


def test_admission_waits_for_pages_and_never_exceeds_the_pool():
    alloc = PageAllocator(5, 4)  # 20 slots; each request caches 12 + 8 - 4 = 16 slots = 4 pages
    s = Scheduler(SchedulerConfig(max_num_batched_tokens=1000, scheduler="fcfs"), alloc)
    for i in range(3):
        s.add(_req(f"r{i}", 12))
    assert [r.request_id for r, _ in s.schedule()] == ["r0"]
    assert alloc.num_used == 4 and len(s.waiting) == 2
    with pytest.raises(ValueError, match="max_tokens"):
        s.check_fits(_req("huge", 40))  # could never fit: the engine's validate rejects it at once


def test_runner_reuse_after_refresh_matches_refresh(tiny64):
    """Right after a Refresh, a Reuse step reads the cache it stored: same tokens, same confidences."""
    cfg = tiny64.config
    pool = KVPool(cfg, 64, 4, tiny64.dtype, "cpu")
    runner = ModelRunner(tiny64, pool, 1 << 20)
    reqs = [Request(f"r{i}", list(range(1, n)), SamplingParams(max_tokens=16, block_length=8), cfg.mask_token_id,
                    cfg.logit_shift) for i, n in enumerate((5, 13))]
    for r in reqs:
        pool.reserve(r.request_id, r.cached_slots)
    fresh = runner.run([(r, Phase.REFRESH) for r in reqs])
    reused = runner.run([(r, Phase.REUSE) for r in reqs])
    for a, b in zip(fresh, reused, strict=True):
        assert a.positions == b.positions and a.tokens == b.tokens
        assert torch.allclose(a.confidence, b.confidence, rtol=1e-10, atol=0)
    assert pool.entries["r1"].positions.shape == (cfg.num_layers, cfg.num_kv_heads, reqs[1].cached_slots)


def _engine(model, kv_pages, **kw):
    per_page = model.config.kv_bytes_per_token(8) * 4
    return Engine(model, EngineConfig(kv_cache_bytes=kv_pages * per_page, page_size=4, **kw))


def test_over_admission_queues_and_everything_is_freed(tiny64):
    engine = _engine(tiny64, kv_pages=12)
    assert engine.pool.nbytes <= engine.config.kv_cache_bytes
    rng = random.Random(0)
    prompts = [[rng.randrange(1, 90) for _ in range(rng.randint(4, 20))] for _ in range(8)]
    sp = SamplingParams(max_tokens=16, block_length=8, refresh_interval=1)
    ids = [engine.add_request(p, sp) for p in prompts]
    peak, done = 0, {}
    while engine.has_unfinished():
        for out in engine.step():
            done.setdefault(out.request_id, []).extend(out.new_token_ids)
        peak = max(peak, engine.pool.allocator.num_used)
        assert engine.pool.allocator.num_used <= engine.pool.allocator.num_pages
    assert peak > engine.pool.allocator.num_pages // 2  # the pool was really shared
    assert engine.pool.allocator.num_used == 0 and not engine.pool.entries
    for rid, p in zip(ids, prompts, strict=True):
        assert done[rid] == generate(tiny64, p, sp).tokens


def test_abort_frees_pages_and_reports(tiny64):
    engine = _engine(tiny64, kv_pages=40)
    a = engine.add_request([1, 2, 3], SamplingParams(max_tokens=16, block_length=8))
    b = engine.add_request([4, 5, 6], SamplingParams(max_tokens=16, block_length=8))
    engine.step()
    assert engine.pool.allocator.num_used > 0
    assert engine.abort(a) and not engine.abort(a) and not engine.abort("nope")
    outs = engine.step()
    aborted = [o for o in outs if o.request_id == a]
    assert aborted and aborted[0].finished and aborted[0].finish_reason == "abort"
    engine.abort(b)
    engine.step()
    assert engine.pool.allocator.num_used == 0 and not engine.has_unfinished()


@pytest.mark.parametrize("refresh_interval", [1, None])
def test_preempt_and_resume_gives_identical_tokens(tiny64, refresh_interval):
    """Requests preempted (cache dropped) and resumed produce the tokens of an uninterrupted run.
    With refresh every step any moment works; with the default policy the preemptions happen where
    the victim was about to Refresh anyway, the case the scheduler prefers."""
    sp = SamplingParams(max_tokens=32, block_length=8, refresh_interval=refresh_interval, ignore_eos=True)
    prompts = [[3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8], [9, 9, 1]]
    expected = _engine(tiny64, 40).generate(prompts, sp)
    engine = _engine(tiny64, kv_pages=40)
    ids = [engine.add_request(p, sp) for p in prompts]
    got: dict[str, list[int]] = {}
    rng = random.Random(5)
    while engine.has_unfinished():
        for r in list(engine.scheduler.running):
            if (refresh_interval == 1 or r.needs_refresh) and rng.random() < 0.8:
                engine.scheduler.preempt(r)
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(out.new_token_ids)
    assert engine.scheduler.num_preemptions >= 2
    assert [got[i] for i in ids] == [e.token_ids for e in expected]
    assert engine.pool.allocator.num_used == 0


def test_an_older_request_takes_pages_back_from_the_newest():
    alloc = PageAllocator(5, 4)
    s = Scheduler(SchedulerConfig(max_num_batched_tokens=1000, scheduler="fcfs"), alloc)
    old, mid, new = _req("old", 4), _req("mid", 4), _req("new", 4)  # 8 cached slots = 2 pages each
    for r in (old, mid, new):
        s.add(r)
    assert [r.request_id for r, _ in s.schedule()] == ["old", "mid"]
    s.preempt(old)  # e.g. dropped for memory earlier
    assert s.admit(new, []) and alloc.num_used == 4  # the newest got in meanwhile
    for r in (mid, new):
        r.cached_block, r.step_in_block = r.block, 1  # both mid-block: no Refresh pending
    batch = s.schedule()
    assert ("old", Phase.REFRESH) in [(r.request_id, ph) for r, ph in batch]
    assert [r.request_id for r in s.waiting] == ["new"]  # the newest was preempted, not "mid"
    assert alloc.num_used == 4 and new.num_preemptions == 1


def test_reuse_cost_is_the_rows_a_reuse_step_computes():
    """`reuse_cost` (kept arithmetic: it is asked many times per iteration) is the size of
    `computed_range` for any block, block length and logit shift."""
    rng = random.Random(4)
    for _ in range(500):
        block = rng.choice([4, 8, 16, 32])
        r = Request("x", [1] * rng.randrange(1, 50), SamplingParams(max_tokens=block * rng.randrange(1, 5),
                                                                    block_length=block, ignore_eos=True),
                    mask_token_id=0)
        r.logit_shift = rng.choice([0, 1])
        for b in range(r.params.max_tokens // block):
            r.block = b
            lo, hi = r.computed_range
            assert r.reuse_cost == hi - lo
