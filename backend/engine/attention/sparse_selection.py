"""Head-centric sparse retention: at a Refresh, each KV head keeps only the cached positions that the
current block attends to most, and the pool stores only those.

Score of cacheable position j for KV head h (every layer chooses on its own):

    score[h, j] = sum over the query heads g of h's group, over the block's query rows i, of
                  softmax_j'(q[g, i] . k[h, j'] / sqrt(D))[j]     (j' over the whole sequence)

i.e. the attention mass the block puts on j. Scores are laid out over the cacheable positions in
position order (the prompt, then the generation outside the current block), max-pooled with a window
of 3 (a kept key brings its neighbours' claim along, as in Sparse-dLLM), and the `keep` best are
kept, ties to the lower position; `window` positions on each side of the block are always kept.
Kept positions fill the head's slots in position order.

The full `[heads, block, sequence]` attention of a batch never exists at once: Refresh requests are
processed in groups whose score tensors fit `SELECTION_BUDGET` (planned on the host, `plan_groups`).
Everything here is plain PyTorch: the same code runs on the CPU and on CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

SELECTION_BUDGET = 256 << 20  # bytes of float32 scores (x3 for temporaries) per group


@dataclass
class SparseItem:
    """One Refresh request to select for (host side)."""

    offset: int  # its first packed row
    seq_len: int
    block: tuple[int, int]  # query positions [start, end) (the current block)
    cacheable: np.ndarray  # positions that may be cached, ascending
    keep: int  # slots per head
    dest: np.ndarray  # [heads, keep] pool rows of its slots
    window: int = 0


@dataclass
class SparseGroup:
    """Device tensors of one group (names match `plan_groups`'s arrays) and its host facts."""

    key_rows: torch.Tensor  # [G, Lmax] packed rows of each request's sequence (padded with 0)
    key_ok: torch.Tensor  # [G, Lmax]
    query_rows: torch.Tensor  # [G, Qmax]
    query_ok: torch.Tensor  # [G, Qmax]
    cache_idx: torch.Tensor  # [G, Nmax] cacheable positions (= key indices)
    cache_ok: torch.Tensor  # [G, Nmax]
    force: torch.Tensor  # [G, Nmax] always kept (the window next to the block)
    keep: torch.Tensor  # [G]
    dest: torch.Tensor  # [G, heads, Kmax] pool rows; past a request's keep: the pool's trash row
    kmax: int
    first: int  # index of the group's first request among the step's sparse requests


def plan_groups(items: list[SparseItem], heads: int, q_heads: int, trash_row: int,
                budget: int = SELECTION_BUDGET) -> list[dict[str, np.ndarray]]:
    """Host arrays per group (`to_group` makes a SparseGroup of their device copies); a group's score
    tensor [G, q_heads, Qmax, Lmax] (x3 for temporaries) fits `budget`, a single request always."""
    groups, start = [], 0
    while start < len(items):
        end = start + 1
        while end < len(items):
            chunk = items[start:end + 1]
            size = (end + 1 - start) * q_heads * max(i.block[1] - i.block[0] for i in chunk) * \
                max(i.seq_len for i in chunk) * 4 * 3
            if size > budget:
                break
            end += 1
        groups.append(_group_arrays(items[start:end], heads, trash_row, start))
        start = end
    return groups


def _group_arrays(items: list[SparseItem], heads: int, trash_row: int, first: int) -> dict[str, np.ndarray]:
    g = len(items)
    lmax = max(i.seq_len for i in items)
    qmax = max(i.block[1] - i.block[0] for i in items)
    nmax = max(len(i.cacheable) for i in items)
    kmax = max(i.keep for i in items)
    a = {"key_rows": np.zeros((g, lmax), np.int64), "key_ok": np.zeros((g, lmax), np.bool_),
         "query_rows": np.zeros((g, qmax), np.int64), "query_ok": np.zeros((g, qmax), np.bool_),
         "cache_idx": np.zeros((g, nmax), np.int64), "cache_ok": np.zeros((g, nmax), np.bool_),
         "force": np.zeros((g, nmax), np.bool_), "keep": np.zeros(g, np.int64),
         "dest": np.full((g, heads, kmax), trash_row, np.int64), "meta": np.array([first, kmax], np.int64)}
    for x, it in enumerate(items):
        a["key_rows"][x, :it.seq_len] = it.offset + np.arange(it.seq_len)
        a["key_ok"][x, :it.seq_len] = True
        b0, b1 = it.block
        a["query_rows"][x, :b1 - b0] = it.offset + np.arange(b0, b1)
        a["query_ok"][x, :b1 - b0] = True
        n = len(it.cacheable)
        a["cache_idx"][x, :n] = it.cacheable
        a["cache_ok"][x, :n] = True
        if it.window:
            near = ((it.cacheable >= b0 - it.window) & (it.cacheable < b0)) | \
                   ((it.cacheable >= b1) & (it.cacheable < b1 + it.window))
            a["force"][x, :n] = near
        a["keep"][x] = it.keep
        a["dest"][x, :, :it.keep] = it.dest
    return a


def to_group(t: dict[str, torch.Tensor], host: dict[str, np.ndarray]) -> SparseGroup:
    """`t`: the group's arrays on the device; `host`: the same arrays on the host (for its sizes)."""
    first, kmax = (int(v) for v in host["meta"])
    return SparseGroup(t["key_rows"], t["key_ok"], t["query_rows"], t["query_ok"], t["cache_idx"], t["cache_ok"],
                       t["force"], t["keep"], t["dest"], kmax, first)


def select(q: torch.Tensor, k: torch.Tensor, g: SparseGroup) -> torch.Tensor:
    """Kept positions [G, heads, Kmax] in ascending order; past a request's keep: `Nmax` (padding)."""
    n_g, qmax = g.query_rows.shape
    hq, hkv, d = q.shape[1], k.shape[1], q.shape[2]
    work = torch.float64 if q.dtype == torch.float64 else torch.float32
    qq = q[g.query_rows].view(n_g, qmax, hkv, hq // hkv, d)  # [G, Q, Hkv, r, D]
    kk = k[g.key_rows]  # [G, L, Hkv, D]
    logits = torch.einsum("gqhrd,glhd->ghrql", qq, kk).to(work) * (1.0 / math.sqrt(d))
    logits = logits.masked_fill(~g.key_ok[:, None, None, None, :], float("-inf"))
    mass = logits.softmax(-1) * g.query_ok[:, None, None, :, None]
    score = mass.sum(dim=(2, 3))  # [G, Hkv, L]
    nmax = g.cache_idx.shape[1]
    cs = score.gather(2, g.cache_idx[:, None, :].expand(n_g, hkv, nmax))
    cs = cs.masked_fill(~g.cache_ok[:, None, :], float("-inf"))
    pooled = F.max_pool1d(cs, kernel_size=3, stride=1, padding=1)
    pooled = pooled.masked_fill(g.force[:, None, :], float("inf")).masked_fill(~g.cache_ok[:, None, :], float("-inf"))
    order = torch.sort(pooled, dim=-1, descending=True, stable=True).indices[..., :g.kmax]
    valid = torch.arange(g.kmax, device=order.device) < g.keep[:, None, None]
    ranked = torch.where(valid, order, nmax).sort(dim=-1).values  # kept cacheable indices, ascending
    return torch.where(ranked < nmax, g.cache_idx.gather(1, ranked.clamp_max(nmax - 1).flatten(1)).view_as(ranked),
                       nmax)


def store_selected(layer: int, k: torch.Tensor, v: torch.Tensor, g: SparseGroup, kept: torch.Tensor, pool) -> None:
    """Write the kept positions' K/V into the group's slots (padding goes to the trash row)."""
    n_g, hkv, kmax = kept.shape
    lmax = g.key_rows.shape[1]
    rows = g.key_rows.gather(1, kept.clamp_max(lmax - 1).flatten(1)).view(n_g, hkv, kmax)
    heads = torch.arange(hkv, device=k.device)[None, :, None]
    pool.store(layer, g.dest.flatten(), k[rows, heads].view(-1, 1, k.shape[-1]),
               v[rows, heads].view(-1, 1, v.shape[-1]))
