"""What one engine step hands from the runner's host side to the device: `StepInputs`, and the stager
that moves a step's index arrays to the device in one copy.

Everything the forward and the decode head need is built here once per step, on the host, from the
scheduled batch: no per-layer tensor creation and no device reads later (the forward can be replayed
as a CUDA graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from backend.engine.runner.decode_head import DecodeRows
from backend.models import PackedBatch


@dataclass
class StepInputs:
    """One step's batch, packed Refresh requests first, then Reuse requests."""

    order: list[int]  # packed request i is entry order[i] of the scheduled batch
    input_ids: torch.Tensor  # [T]
    packed: PackedBatch  # positions [T], seqlens (host), cu_seqlens [B+1]
    num_refresh: int  # requests
    refresh_rows: int  # packed rows of the Refresh requests (they come first)
    refresh_seqlens: list[int]
    reuse_cu: torch.Tensor | None  # [Bu+1] int32 row offsets of the Reuse requests, from refresh_rows
    reuse_table_row: torch.Tensor | None  # [Bu] int32 each Reuse request's row of the pool's slot tables
    max_reuse_rows: int
    store_src: torch.Tensor | None  # [S] long: packed rows whose K/V a Refresh stores
    store_dst: torch.Tensor | None  # [S * Hkv] long: pool rows they go to
    table_rows: torch.Tensor | None  # [U] long: slot-table rows (re)built this step
    tables: torch.Tensor | None  # [U, Hkv, P] int32 their page tables
    counts: torch.Tensor | None  # [U, Hkv] int32 their slot counts
    decode: DecodeRows
    sampling: bool  # some decoded row has temperature > 0 (host-known: no device read)
    any_random: bool  # some decoded row uses random remasking
    any_dream: bool = False  # some decoded row follows one of Dream's algs
    any_filter: bool = False  # some decoded row has top_p / top_k
    dec_bounds: list[tuple[int, int]] = field(default_factory=list)  # per packed request: its decode rows
    dec_positions: list[int] = field(default_factory=list)
    sparse_groups: list = field(default_factory=list)  # backend.engine.attention.sparse_selection.SparseGroup per group
    sparse_entries: list = field(default_factory=list)  # the pool entries of the sparse Refresh requests
    sparse_keep: list[int] = field(default_factory=list)  # their slots per head

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.numel())

    @property
    def is_pure_reuse(self) -> bool:
        return self.num_refresh == 0 and self.store_src is None and self.table_rows is None and not self.sparse_groups


def _align(n: int) -> int:
    return (n + 7) // 8 * 8


class HostStager:
    """Packs named numpy arrays into one byte buffer and returns device tensors viewing them.

    On CUDA the host buffer is pinned and the device buffer is reused across steps: one non-blocking
    host-to-device copy per step. Reuse is safe because every step ends with a device-to-host copy
    that waits for the step's work, so nothing still reads the previous step's buffers. On the CPU the
    arrays are wrapped as they are (no copy at all).
    """

    def __init__(self, device: torch.device):
        self.device = torch.device(device)
        self._host = torch.empty(0, dtype=torch.uint8)
        self._dev = torch.empty(0, dtype=torch.uint8, device=self.device)

    def _reserve(self, nbytes: int) -> None:
        if self._host.numel() >= nbytes:
            return
        size = max(nbytes, 2 * self._host.numel(), 1 << 16)
        self._host = torch.empty(size, dtype=torch.uint8, pin_memory=True)
        self._dev = torch.empty(size, dtype=torch.uint8, device=self.device)

    def send(self, arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        if self.device.type != "cuda":
            return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in arrays.items()}
        total = sum(_align(a.nbytes) for a in arrays.values())
        self._reserve(total)
        host = self._host.numpy()
        spans, off = {}, 0
        for name, a in arrays.items():
            a = np.ascontiguousarray(a)
            host[off:off + a.nbytes] = a.reshape(-1).view(np.uint8)
            spans[name] = (off, a.nbytes, a.dtype, a.shape)
            off += _align(a.nbytes)
        if total:
            self._dev[:total].copy_(self._host[:total], non_blocking=True)
        out = {}
        for name, (o, n, dtype, shape) in spans.items():
            out[name] = self._dev[o:o + n].view(_TORCH_DTYPES[np.dtype(dtype)]).view(shape)
        return out


_TORCH_DTYPES = {np.dtype(np.int64): torch.long, np.dtype(np.int32): torch.int32,
                 np.dtype(np.float64): torch.float64, np.dtype(np.bool_): torch.bool}
