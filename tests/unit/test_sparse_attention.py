"""Head-centric sparse retention: selection equals a brute-force definition, heads choose differently,
the pool holds ~retention of the dense bytes, retention 1 is the dense engine, and admission,
preemption and freeing count retained slots (float64 tiny models)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from backend.engine.attention.pool_attention import PoolAttention
from backend.engine.attention.sparse_selection import SparseItem, plan_groups, select, to_group
from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams

MiB = 1 << 20


def brute_force(q, k, offset, seq_len, block, cacheable, keep, window=0) -> list[list[int]]:
    """Kept positions per KV head, from the definition: full softmax scores, max-pool 3, stable top-k."""
    hq, hkv, d = q.shape[1], k.shape[1], q.shape[2]
    group = hq // hkv
    kept = []
    for h in range(hkv):
        keys = k[offset:offset + seq_len, h].double()
        score = torch.zeros(seq_len, dtype=torch.float64)
        for g in range(h * group, (h + 1) * group):
            for i in range(*block):
                w = (q[offset + i, g].double() @ keys.T) / math.sqrt(d)
                score += torch.softmax(w, 0)
        cs = [float(score[p]) for p in cacheable]
        n = len(cs)
        pooled = [max(cs[max(0, t - 1):t + 2]) for t in range(n)]
        b0, b1 = block
        forced = [b0 - window <= p < b0 or b1 <= p < b1 + window for p in cacheable]
        order = sorted(range(n), key=lambda t: (not forced[t], -pooled[t], t))
        kept.append(sorted(int(cacheable[t]) for t in order[:keep]))
    return kept


def _items(rng: random.Random, heads: int, window: int = 0):
    items, offset = [], 0
    for _ in range(4):
        block_len = rng.choice([2, 4, 8])
        prompt = rng.randint(1, 40)
        gen = block_len * rng.randint(1, 4)
        b0 = prompt + block_len * rng.randrange(gen // block_len)
        seq = prompt + gen
        cacheable = np.array([p for p in range(seq) if not b0 <= p < b0 + block_len], dtype=np.int64)
        keep = rng.randint(1, len(cacheable))
        dest = np.arange(heads * keep).reshape(heads, keep)
        items.append(SparseItem(offset, seq, (b0, b0 + block_len), cacheable, keep, dest, window))
        offset += seq
    return items, offset


@pytest.mark.parametrize("hq,hkv,window,budget", [(4, 4, 0, 1 << 30), (6, 2, 0, 1 << 30), (4, 2, 2, 1)])
def test_selection_equals_brute_force(hq, hkv, window, budget):
    """Random packed queries/keys of several requests, grouped as the budget allows (budget 1: one
    request per group): every head's kept set is the brute-force one, and heads differ."""
    rng = random.Random(hq * 10 + hkv + window)
    items, total = _items(rng, hkv, window)
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(total, hq, 16, generator=gen, dtype=torch.float64) * 2
    k = torch.randn(total, hkv, 16, generator=gen, dtype=torch.float64) * 2
    groups = plan_groups(items, hkv, hq, trash_row=10**6, budget=budget)
    assert len(groups) == (len(items) if budget == 1 else 1)
    differ = False
    for host in groups:
        g = to_group({n: torch.from_numpy(a) for n, a in host.items()}, host)
        kept = select(q, k, g)
        for x in range(kept.shape[0]):
            it = items[g.first + x]
            got = [sorted(kept[x, h, :it.keep].tolist()) for h in range(hkv)]
            assert got == brute_force(q, k, it.offset, it.seq_len, it.block, it.cacheable, it.keep, window)
            assert (kept[x, :, it.keep:] == g.cache_idx.shape[1]).all()  # padding past its keep
            differ |= len({tuple(h) for h in got}) > 1
    assert differ, "every head kept the same positions: the test would not see a head-blind selection"


def _engine(model, **kw) -> Engine:
    kw.setdefault("kv_cache_bytes", 4 * MiB)
    return Engine(model, EngineConfig(sparse_min_cached=0, **kw))


def test_engine_keeps_per_head_the_brute_force_positions(tiny64):
    """In the engine, the pool's record of what each head of each layer kept after a Refresh is the
    brute-force choice from that layer's own queries and keys."""
    captured = {}
    attend = PoolAttention.attend

    def capture(self, layer, q, k, v, batch):
        captured[layer] = (q.clone(), k.clone())
        return attend(self, layer, q, k, v, batch)

    engine = _engine(tiny64)
    prompt = [int(x) for x in torch.randint(1, 90, (37,), generator=torch.Generator().manual_seed(3))]
    sp = SamplingParams(max_tokens=16, block_length=8, ignore_eos=True, sparse_retention=0.4)
    rid = engine.add_request(prompt, sp)
    r = engine.requests[rid]
    PoolAttention.attend = capture
    try:
        engine.step()  # the first step is a Refresh
    finally:
        PoolAttention.attend = attend
    entry = engine.pool.entries[rid]
    blo, bhi = r.computed_range
    cacheable = np.array([p for p in range(r.seq_len) if not blo <= p < bhi])
    keep = math.ceil(0.4 * len(cacheable))
    assert entry.counts == [keep] * tiny64.config.num_kv_heads and r.cached_slots == keep
    for layer, (q, k) in captured.items():
        want = brute_force(q, k, 0, r.seq_len, (r.block_start, r.block_end), cacheable, keep)
        assert [sorted(h) for h in entry.positions[layer].tolist()] == want


def test_retention_one_is_the_dense_engine(tiny64):
    rng = random.Random(4)
    prompts = [[rng.randrange(1, 90) for _ in range(n)] for n in (5, 23, 40)]
    sp = SamplingParams(max_tokens=16, block_length=4, ignore_eos=True)
    dense = _engine(tiny64).generate(prompts, sp)
    engine = _engine(tiny64, sparse_retention=1.0)
    explicit = engine.generate(prompts, SamplingParams(max_tokens=16, block_length=4, ignore_eos=True,
                                                       sparse_retention=1.0))
    assert [r.token_ids for r in explicit] == [r.token_ids for r in dense]


@pytest.mark.parametrize("retention", [0.75, 0.5, 0.25])
def test_pool_bytes_follow_retention(tiny64, retention):
    engine = _engine(tiny64)
    heads, page = tiny64.config.num_kv_heads, engine.config.page_size
    rid = engine.add_request(list(range(1, 61)), SamplingParams(max_tokens=32, block_length=8,
                                                                sparse_retention=retention))
    engine.step()
    r = engine.requests[rid]
    dense_bytes = engine.pool.bytes_per_page * heads * math.ceil(r.cacheable / page)
    held = engine.pool.bytes_held(rid)
    assert abs(held - retention * dense_bytes) <= engine.pool.bytes_per_page * heads  # one page per head
    assert len(engine.pool.allocator.owned[rid]) == heads * math.ceil(math.ceil(retention * r.cacheable) / page)


def test_short_requests_stay_dense(tiny64):
    engine = Engine(tiny64, EngineConfig(kv_cache_bytes=4 * MiB, sparse_min_cached=50))
    short = engine.add_request([1, 2, 3], SamplingParams(max_tokens=8, block_length=4, sparse_retention=0.5))
    long = engine.add_request(list(range(1, 70)), SamplingParams(max_tokens=8, block_length=4, sparse_retention=0.5))
    assert not engine.requests[short].sparse and engine.requests[long].sparse


def test_over_admission_with_sparse_requests_queues_and_frees_everything(tiny64):
    """A pool too small for all requests at once: sparse requests are admitted by their retained slots,
    queue or get preempted, all finish without error, and every page and slot-table row comes back."""
    per_page = tiny64.config.kv_bytes_per_token(8) * 4
    engine = Engine(tiny64, EngineConfig(kv_cache_bytes=14 * per_page, page_size=4, sparse_min_cached=0,
                                         max_num_seqs=8))
    rng = random.Random(6)
    ids = []
    for _ in range(10):
        sp = SamplingParams(max_tokens=16, block_length=4, ignore_eos=True, sparse_retention=rng.choice([0.3, 0.6]))
        ids.append(engine.add_request([rng.randrange(1, 90) for _ in range(rng.randint(10, 30))], sp))
    finished, peak = {}, 0
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                finished[out.request_id] = (out.finish_reason, out.error)
        peak = max(peak, len(engine.scheduler.running))
        if engine.scheduler.running and rng.random() < 0.1:
            engine.scheduler.preempt(engine.scheduler.running[-1])
    assert all(finished[i] == ("length", None) for i in ids)
    assert engine.pool.allocator.num_used == 0 and not engine.pool.entries
    assert sorted(engine.pool._free_rows) == list(range(engine.config.max_num_seqs))  # every table row back
    assert peak >= 2


@pytest.mark.parametrize("field,value", [("sparse_retention", 0.0), ("sparse_retention", 1.5),
                                         ("sparse_min_cached", -1), ("sparse_window", -2)])
def test_bad_sparse_settings_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}:"):
        EngineConfig(**{field: value})


@pytest.mark.parametrize("value", [0, -0.5, 1.01, "half"])
def test_bad_request_retention_names_the_field(tiny64, value):
    engine = _engine(tiny64)
    with pytest.raises(ValueError, match="^sparse_retention"):
        engine.make_params({"sparse_retention": value})


def test_a_tiny_retention_keeps_one_page_per_head(tiny64):
    """Issue 20: the smallest retention (0.01) keeps at least one page's worth of positions per head (a
    page is allocated whole: fewer would save no memory), and every position when fewer are cacheable."""
    engine = _engine(tiny64)  # sparse_min_cached=0: every request goes sparse
    page, heads = engine.config.page_size, tiny64.config.num_kv_heads
    sp = SamplingParams(max_tokens=16, block_length=8, ignore_eos=True, sparse_retention=0.01)
    long = engine.add_request(list(range(1, 61)), sp)
    short = engine.add_request([1, 2, 3], sp)
    while not {long, short} <= set(engine.pool.entries):  # their first Refresh: each head selects its slots
        engine.step()
    r, s = engine.requests[long], engine.requests[short]
    assert r.sparse and math.ceil(0.01 * r.cacheable) < page
    assert r.cached_slots == page and engine.pool.entries[long].counts == [page] * heads
    assert len(engine.pool.allocator.owned[long]) == heads  # one page per head: the least a head can hold
    assert s.cacheable < page and s.cached_slots == s.cacheable
    assert engine.pool.entries[short].counts == [s.cacheable] * heads
    out = {o.request_id: o for o in engine.generate([list(range(1, 61))], sp)}
    assert len(next(iter(out.values())).token_ids) == 16  # it decodes (ignore_eos: every token)
