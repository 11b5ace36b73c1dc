"""Page bookkeeping for the K/V pool: which request owns which pages (no tensors, so the scheduler
can ask "does this fit?" without touching device memory).

A page holds `page_size` slots of ONE KV head (the head-centric layout: each head of a request has
its own pages, so heads may keep different positions and counts). A request caching `slots`
positions per head therefore needs `heads * ceil(slots / page_size)` pages; head h owns the h-th
equal share of the request's page list. The scheduler reserves and releases through this interface
(`reserve`, `release`, `can_reserve`, `holds`, `pages_for`, `num_pages`); `KVPool` offers the same
one, so with a pool it is the pool that owns a cache's lifetime (pages and index together)."""

from __future__ import annotations


class OutOfPages(RuntimeError):
    pass


class PageAllocator:
    def __init__(self, num_pages: int, page_size: int, heads: int = 1):
        if num_pages < 1 or page_size < 1 or heads < 1:
            raise ValueError(f"kv pool: needs at least one page of at least one slot (got {num_pages} x {page_size})")
        self.num_pages = num_pages
        self.page_size = page_size
        self.heads = heads
        self._free = list(range(num_pages - 1, -1, -1))  # pop() hands out low page ids first
        self.owned: dict[str, list[int]] = {}

    def pages_for(self, slots: int) -> int:
        """Pages for `slots` cached positions in every head."""
        return self.heads * -(-slots // self.page_size)

    @property
    def num_used(self) -> int:
        return self.num_pages - len(self._free)

    def can_reserve(self, slots: int) -> bool:
        return self.pages_for(slots) <= len(self._free)

    def reserve(self, owner: str, slots: int) -> list[int]:
        """Give `owner` pages for `slots` slots per head (replacing what it held)."""
        self.release(owner)
        n = self.pages_for(slots)
        if n > len(self._free):
            raise OutOfPages(f"kv pool: {owner} needs {n} pages, {len(self._free)} free")
        pages = [self._free.pop() for _ in range(n)]
        self.owned[owner] = pages
        return pages

    def release(self, owner: str) -> int:
        pages = self.owned.pop(owner, [])
        self._free.extend(reversed(pages))
        return len(pages)

    def holds(self, owner: str) -> bool:
        return owner in self.owned
