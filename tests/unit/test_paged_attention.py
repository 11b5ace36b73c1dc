"""The paged attention kernel against its PyTorch reference, and the reference against plain softmax.

On a CPU machine the kernel runs under TRITON_INTERPRET=1 (set by tests/conftest.py), on small shapes;
on a GPU machine (DLLM_KERNELS_ON_GPU=1, as benchmarks/gpu_check.sh runs it) on CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch

from kernels.paged_attention import PagedConfig, paged_attention, paged_attention_reference, triton

pytestmark = pytest.mark.skipif(triton is None, reason="triton is not installed")  # `make setup` installs it

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _case(q_lens, counts, hq, hkv, d, page_size, dtype, seed, num_pages=None):
    """Random inputs: request b has q_lens[b] fresh rows and counts[b] (None: no cache; else one slot
    count per KV head) cached slots on shuffled pages, so slots of one head span pages in any order."""
    gen = torch.Generator().manual_seed(seed)
    t = sum(q_lens)
    b = len(q_lens)
    per_head_pages = [[-(-c // page_size) for c in cs] if cs is not None else [0] * hkv for cs in counts]
    needed = sum(sum(p) for p in per_head_pages)
    num_pages = num_pages or needed + 3
    perm = torch.randperm(num_pages, generator=gen).tolist()
    max_pages = max([max(p) for p in per_head_pages] + [1])
    tables = torch.full((b + 1, hkv, max_pages), 10**6, dtype=torch.int32)  # junk where unused: never read
    slot_counts = torch.zeros(b + 1, hkv, dtype=torch.int32)
    table_row = torch.full((b,), -1, dtype=torch.int32)
    nxt = 0
    for i, cs in enumerate(counts):
        if cs is None:
            continue
        row = b - i  # rows need not follow batch order
        table_row[i] = row
        for h, c in enumerate(cs):
            n = per_head_pages[i][h]
            tables[row, h, :n] = torch.tensor(perm[nxt:nxt + n], dtype=torch.int32)
            slot_counts[row, h] = c
            nxt += n

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype).to(DEVICE)

    cu = torch.tensor([0] + list(torch.tensor(q_lens).cumsum(0).tolist()), dtype=torch.int32)
    return dict(q=rnd(t, hq, d), k=rnd(t, hkv, d), v=rnd(t, hkv, d), cu=cu.to(DEVICE),
                k_cache=rnd(num_pages * page_size, d), v_cache=rnd(num_pages * page_size, d),
                table_row=table_row.to(DEVICE), block_tables=tables.to(DEVICE), slot_counts=slot_counts.to(DEVICE),
                page_size=page_size)


def _softmax_oracle(c) -> torch.Tensor:
    """Independent float64 definition: explicit scores and softmax, one (request, query head) at a time."""
    q, k, v = c["q"].double().cpu(), c["k"].double().cpu(), c["v"].double().cpu()
    kc, vc = c["k_cache"].double().cpu(), c["v_cache"].double().cpu()
    cu, rows = c["cu"].tolist(), c["table_row"].tolist()
    tables, counts, ps = c["block_tables"].cpu(), c["slot_counts"].cpu(), c["page_size"]
    hq, hkv, d = q.shape[1], k.shape[1], q.shape[2]
    out = torch.zeros_like(q)
    for b in range(len(rows)):
        lo, hi = cu[b], cu[b + 1]
        for h in range(hq):
            g = h // (hq // hkv)
            keys, vals = [k[lo:hi, g]], [v[lo:hi, g]]
            if rows[b] >= 0:
                idx = [int(tables[rows[b], g, s // ps]) * ps + s % ps for s in range(int(counts[rows[b], g]))]
                keys.append(kc[idx])
                vals.append(vc[idx])
            kk, vv = torch.cat(keys), torch.cat(vals)
            w = torch.softmax(q[lo:hi, h] @ kk.T / math.sqrt(d), dim=-1)
            out[lo:hi, h] = w @ vv
    return out


CASES = {
    # name: (q_lens, counts per request (None = no cache), hq, hkv, d, page_size)
    "dense": ([5, 3], [[7, 7], [20, 20]], 2, 2, 16, 4),
    "gqa": ([4, 6], [[9, 9], [3, 3]], 4, 2, 32, 4),
    "heads-differ": ([3, 8], [[1, 11, 6, 0], [16, 4, 9, 2]], 4, 4, 16, 4),
    "empty-cache": ([6, 2, 3], [None, [0], None], 2, 1, 16, 8),
    "page-boundaries": ([2], [[33, 17]], 2, 2, 16, 16),
    "many-lengths": ([1, 17, 4, 9, 70], [[5, 2], None, [40, 40], [0, 3], [130, 129]], 4, 2, 16, 8),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference_is_attention_over_fresh_and_cached_keys(name):
    q_lens, counts, hq, hkv, d, ps = CASES[name]
    c = _case(q_lens, counts, hq, hkv, d, ps, torch.float64, seed=1)
    ref = paged_attention_reference(**c)
    assert torch.allclose(ref.cpu(), _softmax_oracle(c), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_matches_reference_float32(name):
    q_lens, counts, hq, hkv, d, ps = CASES[name]
    c = _case(q_lens, counts, hq, hkv, d, ps, torch.float32, seed=2)
    out = torch.full_like(c["q"], float("nan"))  # poisoned: every row must be written
    paged_attention(**c, max_q_rows=max(q_lens), out=out)
    ref = paged_attention_reference(**c)
    assert torch.isfinite(out).all()
    err = (out - ref).norm() / ref.norm()
    assert err < 1e-5, f"relative error {err:.2e}"


# Launch choices the bandwidth benchmark compares: each must compute the same attention.
# Splits: the cached slots of one (request, head) shared by several programs (many of them empty here).
VARIANTS = [PagedConfig(block_n=128, k_rows=True), PagedConfig(block_n=32, num_stages=3, head_major=True),
            PagedConfig(num_warps=8, k_rows=True, head_major=True), PagedConfig(splits=2),
            PagedConfig(splits=4, block_n=16, head_major=True), PagedConfig(splits=8, k_rows=True),
            # GQA-grouped: one program per KV head over (row, query head) pairs; small tiles give several
            # tiles per request, some cut inside a row's group of heads
            PagedConfig(grouped=True), PagedConfig(grouped=True, grouped_block_m=16, head_major=True, k_rows=True),
            PagedConfig(grouped=True, splits=4, block_n=16)]


@pytest.mark.parametrize("config", VARIANTS, ids=lambda c: f"n{c.block_n}-w{c.num_warps}-s{c.num_stages}"
                         f"{'-rows' if c.k_rows else ''}{'-heads' if c.head_major else ''}-x{c.splits}"
                         f"{f'-g{c.grouped_block_m}' if c.grouped else ''}")
@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_variants_match_reference(name, config):
    q_lens, counts, hq, hkv, d, ps = CASES[name]
    c = _case(q_lens, counts, hq, hkv, d, ps, torch.float32, seed=5)
    out = torch.full_like(c["q"], float("nan"))
    paged_attention(**c, max_q_rows=max(q_lens), out=out, config=config)
    ref = paged_attention_reference(**c)
    assert torch.isfinite(out).all()
    assert (out - ref).norm() / ref.norm() < 1e-5


def test_splits_and_grouped_tiles_must_be_powers_of_two():
    with pytest.raises(ValueError, match="splits"):
        PagedConfig(splits=3)
    with pytest.raises(ValueError, match="grouped_block_m"):
        PagedConfig(grouped=True, grouped_block_m=48)


# Triton 3.9's CPU interpreter multiplies bf16 tiles wrongly in tl.dot (even a plain 16x16 product),
# so bf16 is checked on CUDA only.
BF16 = pytest.param(torch.bfloat16, marks=pytest.mark.skipif(DEVICE == "cpu", reason="interpreter: bf16 tl.dot"))


@pytest.mark.parametrize("dtype", [torch.float16, BF16])
def test_kernel_matches_reference_half(dtype):
    q_lens, counts, hq, hkv, d, ps = CASES["many-lengths"]
    c = _case(q_lens, counts, hq, hkv, d, ps, dtype, seed=3)
    out = paged_attention(**c, max_q_rows=max(q_lens))
    ref = paged_attention_reference(**{**c, **{n: c[n].float() for n in ("q", "k", "v", "k_cache", "v_cache")}})
    err = (out.float() - ref).norm() / ref.norm()
    assert err < (2e-2 if dtype == torch.bfloat16 else 4e-3), f"relative error {err:.2e}"


@pytest.mark.parametrize("config", [PagedConfig(), PagedConfig(grouped=True)], ids=["default", "grouped"])
def test_kernel_at_model_head_dim_and_block_rows(config):
    """Head dim 128 and a 33-row block (Dream: block + the row before it), over several query tiles;
    grouped, Dream's 7 query heads per KV head: 231 (row, head) pairs in two tiles of 128."""
    c = _case([33, 32], [[48, 40], [50, 50]], 14, 2, 128, 16, torch.float32, seed=4)
    out = torch.full_like(c["q"], float("nan"))
    paged_attention(**c, max_q_rows=33, out=out, config=config)
    ref = paged_attention_reference(**c)
    assert torch.isfinite(out).all() and (out - ref).norm() / ref.norm() < 1e-5
