"""Paged K/V storage with head-centric bookkeeping.

Storage per layer is `[num_pages * page_size, kv_heads, head_dim]` for K and for V. A request owns
pages (the same page ids in every layer); its slot s lives at row `pages[s // page_size] *
page_size + s % page_size`. The logical side is kept per (request, layer, KV head): slot j of head h
holds head h's j-th kept position. Dense caching keeps every position in every head (one shared
index, broadcast); sparse retention (a later step) gives each head its own positions while the
physical layout stays the same, so attention reads slots without knowing positions (rotary is
already applied to cached keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backend.config import ModelConfig
from backend.page_allocator import PageAllocator


@dataclass
class CacheEntry:
    pages: list[int]
    rows: torch.Tensor  # [num_slots] flat storage rows of this request's slots, on the pool device
    positions: torch.Tensor  # [num_layers, kv_heads, num_slots] logical position per slot (may be a view)

    @property
    def num_slots(self) -> int:
        return int(self.rows.numel())


class KVPool:
    def __init__(self, cfg: ModelConfig, num_pages: int, page_size: int, dtype: torch.dtype, device):
        self.cfg = cfg
        self.allocator = PageAllocator(num_pages, page_size)
        self.page_size = page_size
        self.dtype = dtype
        self.device = torch.device(device)
        shape = (num_pages * page_size, cfg.num_kv_heads, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(cfg.num_layers)]
        self.entries: dict[str, CacheEntry] = {}

    @staticmethod
    def pages_for_budget(cfg: ModelConfig, budget_bytes: int, page_size: int, dtype: torch.dtype) -> int:
        per_slot = cfg.kv_bytes_per_token(torch.empty(0, dtype=dtype).element_size())
        return max(0, int(budget_bytes) // (per_slot * page_size))

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def assign(self, request_id: str, positions: list[int]) -> CacheEntry:
        """(Re)build the dense index of a request: every layer and head keeps `positions`, in order.
        Pages must already be allocated for at least len(positions) slots."""
        pages = self.allocator.owned[request_id]
        n = len(positions)
        page_t = torch.tensor(pages, dtype=torch.long)
        slot = torch.arange(n)
        rows = (page_t[slot // self.page_size] * self.page_size + slot % self.page_size).to(self.device)
        pos = torch.tensor(positions, dtype=torch.long, device=self.device)
        entry = CacheEntry(pages, rows, pos.expand(self.cfg.num_layers, self.cfg.num_kv_heads, n))
        self.entries[request_id] = entry
        return entry

    def release(self, request_id: str) -> int:
        self.entries.pop(request_id, None)
        return self.allocator.free(request_id)

    def store(self, layer: int, rows: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k[layer].index_copy_(0, rows, k.to(self.dtype))
        self.v[layer].index_copy_(0, rows, v.to(self.dtype))

    def gather(self, layer: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer].index_select(0, rows), self.v[layer].index_select(0, rows)
