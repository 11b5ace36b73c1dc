"""The paged, head-centric K/V pool: the tensor-free page allocator and the pool (device tensors,
per-head page tables and positions). The pool is the one owner of what is cached: it reserves and
releases a request's pages and index together."""
