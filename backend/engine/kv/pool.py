"""Paged K/V storage with head-centric bookkeeping.

Physical side: per layer, K and V are `[num_pages * page_size, head_dim]`; a page holds `page_size`
slots of one KV head of one request (pages are the same in every layer). Logical side, per
(request, KV head): a page list, a slot count and, per layer, which position each slot holds. Dense
caching keeps every cacheable position in every head; sparse retention gives each head its own
positions and count while the physical layout stays the same, so attention reads slots without
knowing positions (rotary is already applied to cached keys).

The device-side slot tables that the paged attention kernel reads (`block_tables [R, Hkv, P]`,
`slot_counts [R, Hkv]`) live here, one row per request holding a cache, so a step only names each
request's row instead of shipping its page list. Rows are (re)written when a request's cache is
(re)built, as part of the step's one host-to-device copy (see `backend/engine/runner/step_inputs.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from backend.engine.kv.page_allocator import PageAllocator
from backend.models.model_config import ModelConfig


@dataclass
class CacheEntry:
    pages: list[int]  # heads x pages_per_head page ids; head h owns pages[h * pages_per_head:][:pages_per_head]
    table_row: int  # this request's row of block_tables / slot_counts
    counts: list[int]  # slots held per KV head
    positions: torch.Tensor  # [num_layers, kv_heads, max(counts)] logical position per slot (may be a view)


class KVPool:
    def __init__(self, cfg: ModelConfig, num_pages: int, page_size: int, dtype: torch.dtype, device,
                 max_requests: int = 64):
        self.cfg = cfg
        self.heads = cfg.num_kv_heads
        self.allocator = PageAllocator(num_pages, page_size, self.heads)
        self.page_size = page_size
        self.dtype = dtype
        self.device = torch.device(device)
        # One page more than the allocator hands out: its first row is where padded writes go.
        self.trash_row = num_pages * page_size
        shape = ((num_pages + 1) * page_size, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(cfg.num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=self.device) for _ in range(cfg.num_layers)]
        self.max_pages_per_head = -(-cfg.max_sequence_length // page_size)
        self.block_tables = torch.zeros(max_requests, self.heads, self.max_pages_per_head, dtype=torch.int32,
                                        device=self.device)
        self.slot_counts = torch.zeros(max_requests, self.heads, dtype=torch.int32, device=self.device)
        self._free_rows = list(range(max_requests - 1, -1, -1))
        self.entries: dict[str, CacheEntry] = {}  # a request's table row lives as long as its entry

    @staticmethod
    def pages_for_budget(cfg: ModelConfig, budget_bytes: int, page_size: int, dtype: torch.dtype) -> int:
        """Pages (of one KV head each) that fit the budget, the pool's trash page included."""
        per_head_slot = cfg.kv_bytes_per_token(torch.empty(0, dtype=dtype).element_size()) // cfg.num_kv_heads
        return max(0, int(budget_bytes) // (per_head_slot * page_size) - 1)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    @property
    def bytes_per_page(self) -> int:
        """K and V of one page (one KV head's slots) over all layers."""
        return 2 * self.cfg.num_layers * self.page_size * self.cfg.head_dim * self.k[0].element_size()

    def bytes_held(self, request_id: str) -> int:
        """K/V bytes of the pages a request holds (what admission counts)."""
        return len(self.allocator.owned.get(request_id, [])) * self.bytes_per_page

    # --- logical side -------------------------------------------------------------------------
    def assign(self, request_id: str, positions) -> tuple[CacheEntry, np.ndarray]:
        """(Re)build the dense index of a request: every layer and head keeps `positions`, in order.
        Pages must already be allocated for at least len(positions) slots per head. Returns the entry
        and the pool rows `[len(positions), heads]` where the slots live (where to store the K/V);
        the caller writes `table_update(entry)` to the device with its step's inputs."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        entry, rows = self._entry(request_id, len(positions))
        entry.positions = pos.expand(self.cfg.num_layers, self.heads, len(positions))
        return entry, rows.T

    def assign_sparse(self, request_id: str, keep: int) -> tuple[CacheEntry, np.ndarray]:
        """A request whose heads each keep `keep` positions chosen during the forward (the caller sets
        `entry.positions` once they are known). Returns the entry and the rows `[heads, keep]`."""
        return self._entry(request_id, keep)

    def _entry(self, request_id: str, n: int) -> tuple[CacheEntry, np.ndarray]:
        pages = self.allocator.owned[request_id]
        per_head = len(pages) // self.heads
        if per_head * self.page_size < n:
            raise RuntimeError(f"kv pool: {request_id} holds {per_head} pages per head for {n} slots")
        old = self.entries.get(request_id)
        if old is not None:
            row = old.table_row
        elif self._free_rows:
            row = self._free_rows.pop()
        else:
            raise RuntimeError("kv pool: more requests hold a cache than max_num_seqs allows")
        entry = CacheEntry(pages, row, [n] * self.heads, torch.empty(self.cfg.num_layers, self.heads, 0))
        self.entries[request_id] = entry
        table = np.asarray(pages, dtype=np.int64).reshape(self.heads, per_head)
        slot = np.arange(n)
        return entry, table[:, slot // self.page_size] * self.page_size + slot % self.page_size  # [heads, n]

    def table_update(self, entry: CacheEntry) -> tuple[np.ndarray, np.ndarray]:
        """Host values of the entry's device rows: (page table [heads, max_pages_per_head], counts [heads])."""
        per_head = len(entry.pages) // self.heads
        table = np.zeros((self.heads, self.max_pages_per_head), dtype=np.int32)
        table[:, :per_head] = np.asarray(entry.pages, dtype=np.int32).reshape(self.heads, per_head)
        return table, np.asarray(entry.counts, dtype=np.int32)

    # --- a cache's lifetime (the scheduler's interface, as PageAllocator's) ---------------------
    @property
    def num_pages(self) -> int:
        return self.allocator.num_pages

    def pages_for(self, slots: int) -> int:
        return self.allocator.pages_for(slots)

    def can_reserve(self, slots: int) -> bool:
        return self.allocator.can_reserve(slots)

    def holds(self, request_id: str) -> bool:
        return self.allocator.holds(request_id)

    def reserve(self, request_id: str, slots: int) -> list[int]:
        return self.allocator.reserve(request_id, slots)

    def release(self, request_id: str) -> int:
        """Free a request's pages, and with them its index and table row."""
        entry = self.entries.pop(request_id, None)
        if entry is not None:
            self._free_rows.append(entry.table_row)
        return self.allocator.release(request_id)

    def write_tables(self, rows: torch.Tensor, tables: torch.Tensor, counts: torch.Tensor) -> None:
        """Install the device slot tables of the requests whose caches a step (re)builds."""
        self.block_tables[rows] = tables
        self.slot_counts[rows] = counts

    def record_kept(self, entries: list[CacheEntry], kept: torch.Tensor, keep: list[int]) -> None:
        """The positions each head of each layer of these sparse entries kept (`kept [layers, i, heads, k]`)."""
        for i, entry in enumerate(entries):
            entry.positions = kept[:, i, :, :keep[i]]

    # --- physical side ------------------------------------------------------------------------
    def store(self, layer: int, dest: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """One indexed write per tensor: `dest [S * heads]` pool rows for `k`/`v [S, heads, D]`."""
        d = self.cfg.head_dim
        self.k[layer].index_copy_(0, dest, k.reshape(-1, d).to(self.dtype))
        self.v[layer].index_copy_(0, dest, v.reshape(-1, d).to(self.dtype))
