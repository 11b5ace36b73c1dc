"""CUDA graphs of the Reuse forward: one captured graph per batch-size bucket, replayed when a step fits.

A Reuse step (only the current block of every request, attending to cached K/V) is what a request
does 31 times out of 32, and at small batch it is launch-bound: ~1,500 kernels for a few milliseconds
of GPU work. A graph replays them with one launch. Buckets hold `B` requests of up to `rows` rows each
(block + the row before it for Dream); a step with fewer requests or rows is padded: the padded
requests have no rows (the attention kernel skips them), the padded rows are computed and ignored.
Refresh and mixed steps, and Reuse steps that fit no bucket, run eagerly.
"""

from __future__ import annotations

import logging
import time

import torch

from backend.engine.attention.pool_attention import PoolAttention
from backend.engine.kv.pool import KVPool
from backend.engine.runner.step_inputs import StepInputs
from backend.engine.sampling_params import DEFAULT_MAX_BLOCK
from backend.models import DiffusionLM, PackedBatch
from kernels.paged_attention import kernel_available

log = logging.getLogger(__name__)


def bucket_sizes(max_seqs: int) -> list[int]:
    small = [b for b in (1, 2, 4, 8) if b < max_seqs]
    return small + [b for b in range(16, max_seqs, 16)] + [max_seqs]


class ReuseGraphs:
    def __init__(self, model: DiffusionLM, pool: KVPool, max_seqs: int, rows: int):
        self.model, self.pool = model, pool
        self.buckets = bucket_sizes(max_seqs)
        self.rows = rows
        dev = model.device
        cap = self.buckets[-1]
        self.input_ids = torch.zeros(cap * rows, dtype=torch.long, device=dev)
        self.positions = torch.zeros(cap * rows, dtype=torch.long, device=dev)
        self.cu = torch.zeros(cap + 1, dtype=torch.int32, device=dev)
        self.table_row = torch.full((cap,), -1, dtype=torch.int32, device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.outputs: dict[int, torch.Tensor] = {}
        self.capture_seconds = 0.0

    @classmethod
    def for_engine(cls, model: DiffusionLM, pool: KVPool, config) -> ReuseGraphs:
        # Rows per request: the default block (DEFAULT_MAX_BLOCK) plus Dream's extra row; smaller blocks fit too.
        rows = DEFAULT_MAX_BLOCK + model.config.logit_shift
        return cls(model, pool, config.cuda_graph_max_seqs or config.max_num_seqs, rows)

    def _context(self, b: int) -> PoolAttention:
        return PoolAttention.reuse_only(self.pool, self.cu[:b + 1], self.table_row[:b], self.rows)

    @torch.inference_mode()
    def capture(self) -> bool:
        """Capture every bucket, largest first (they share one memory pool). False (and eager steps) when
        the paged kernel cannot run here or capture fails."""
        if not kernel_available(self.model.device, self.model.dtype):
            return False
        start = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        try:
            for b in reversed(self.buckets):
                t = b * self.rows
                self.cu[:b + 1] = torch.arange(0, t + 1, self.rows, dtype=torch.int32, device=self.cu.device)
                self.table_row[:b] = -1
                packed = PackedBatch(self.positions[:t], [self.rows] * b, self.cu[:b + 1])
                ctx = self._context(b)
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):  # warm up off the capture: kernel compilation, workspaces
                    self.model(self.input_ids[:t], packed, ctx)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=pool):
                    self.outputs[b] = self.model(self.input_ids[:t], packed, ctx)
                self.graphs[b] = graph
        except Exception as e:  # a driver or kernel that cannot be captured: eager is still correct
            log.warning("cuda graphs: capture failed (%s: %s); Reuse steps run eagerly", type(e).__name__, e)
            self.graphs.clear()
            self.outputs.clear()
            return False
        torch.cuda.synchronize()
        self.capture_seconds = time.perf_counter() - start
        log.info("cuda graphs: %d Reuse buckets (%s requests x %d rows) captured in %.1f s", len(self.graphs),
                 self.buckets, self.rows, self.capture_seconds)
        return True

    @torch.inference_mode()
    def time_replay(self, b: int) -> float:
        """Seconds of one synchronised replay of bucket `b` with every row live and no cached K/V: what
        a small Reuse step costs without launches (the cost model's graph floor)."""
        t = b * self.rows
        self.cu[:b + 1] = torch.arange(0, t + 1, self.rows, dtype=torch.int32, device=self.cu.device)
        self.table_row[:b] = -1
        self.graphs[b].replay()  # warm
        torch.cuda.synchronize()
        start = time.perf_counter()
        self.graphs[b].replay()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    def bucket_for(self, inputs: StepInputs) -> int | None:
        if not inputs.is_pure_reuse or inputs.max_reuse_rows > self.rows:
            return None
        n = len(inputs.order)
        return next((b for b in self.buckets if b >= n and b in self.graphs), None)

    def fits(self, inputs: StepInputs) -> bool:
        return self.bucket_for(inputs) is not None

    def replay(self, inputs: StepInputs) -> torch.Tensor:
        b = self.bucket_for(inputs)
        n, t = len(inputs.order), inputs.num_rows
        self.input_ids[:t].copy_(inputs.input_ids)
        self.positions[:t].copy_(inputs.packed.positions)
        self.cu[:n + 1].copy_(inputs.reuse_cu)
        self.cu[n + 1:b + 1].fill_(t)  # padded requests: no rows
        self.table_row[:n].copy_(inputs.reuse_table_row)
        self.graphs[b].replay()
        return self.outputs[b][:t]
