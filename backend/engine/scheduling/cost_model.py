"""How long one engine iteration takes, predicted from what it computes and reads (no tensors here).

    memory  = weight read + kv_bytes / bandwidth
    compute = intercept + refresh_tokens x per_token + reuse_tokens x reuse_per_token + kv_bytes x kv_per_byte
    t       = max(memory, compute), and at least `floor` unless the step replays a CUDA graph

The memory piece is the bandwidth-bound regime: every iteration reads all the weights (`graph_floor`
where graphs are captured, else `floor`), plus the cached K/V its Reuse rows attend to. The compute
piece costs each token through the model, a Reuse row (a block row decoded every step) and a
Refresh token priced apart, and the attention over the cache in proportion to its size
(`kv_per_byte`: attention kernels run apart from the GEMMs, so their time adds rather than overlaps;
fitted on all but one of the CPU profile's workloads, the model predicts the one left out within
4-13% median error, 5-29% without this term). `floor` is what an eager iteration of a few tokens
costs (launches, host work). `knee_tokens` is where compute, not bandwidth, becomes the limit: below
it extra Refresh tokens ride along on the weight read.

`calibrate` fits the model on the actual device and model from a few timed forwards at start (about
a second on a GPU; the engine passes a function that runs them); `backend.engine.scheduling.cost_refit` then refits it
from the iterations the engine ran (their measured times), which also prices what the timed forwards
leave out (decoding, step inputs, Reuse rows). `CostModel()` holds fixed defaults (the bundled model on a
2-core CPU), which tests use so that schedules do not depend on timing.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class CostModel:
    # Defaults: what calibration measured for the bundled model on a 2-core AMD EPYC (make bench,
    # 2026-11-26): ~3 ms for any small iteration, ~115 us per token beyond, knee near 26 tokens.
    floor: float = 3e-3  # seconds: an eager iteration of a handful of tokens
    intercept: float = 0.0  # seconds: the compute line's value at 0 tokens
    per_token: float = 1.15e-4  # seconds per Refresh token through the model, once compute-bound
    reuse_per_token: float | None = None  # seconds per Reuse row (None: as a Refresh token)
    kv_per_byte: float = 0.0  # seconds per byte of cached K/V the Reuse rows attend to, once compute-bound
    bandwidth: float = 4.5e9  # bytes per second for reading cached K/V
    # A Reuse iteration replayed from a captured CUDA graph pays no launches: its floor is the weight
    # read alone (None: no graphs, every iteration is eager).
    graph_floor: float | None = None
    calibrated: bool = False

    def predict(self, refresh: int = 0, reuse: int = 0, kv_bytes: int = 0, graphed: bool = False) -> float:
        """Seconds for an iteration of `refresh` Refresh tokens and `reuse` Reuse rows reading `kv_bytes`."""
        return max(self.pieces(refresh, reuse, kv_bytes, graphed))

    def pieces(self, refresh: int, reuse: int, kv_bytes: int, graphed: bool) -> tuple[float, float, float]:
        """The floor (launches: only an eager step pays it), memory and compute pieces; the time is the largest."""
        eager = not (graphed and self.graph_floor is not None)
        return (self.floor if eager else float("-inf"), self.memory(kv_bytes), self.compute(refresh, reuse, kv_bytes))

    def memory(self, kv_bytes: int) -> float:
        """The bandwidth-bound piece: the weight read and the cached K/V."""
        return (self.floor if self.graph_floor is None else self.graph_floor) + kv_bytes / self.bandwidth

    def compute(self, refresh: int, reuse: int, kv_bytes: int) -> float:
        """The compute-bound piece: every token through the model, and the attention over the cache."""
        return self.intercept + refresh * self.per_token + reuse * self.reuse_rate + kv_bytes * self.kv_per_byte

    @property
    def reuse_rate(self) -> float:
        return self.per_token if self.reuse_per_token is None else self.reuse_per_token

    @property
    def knee_tokens(self) -> int:
        """Refresh tokens at which an eager iteration stops being memory-bound."""
        return max(0, int((self.floor - self.intercept) / self.per_token))

    def to_dict(self) -> dict:
        return {"floor_ms": round(self.floor * 1e3, 3), "intercept_ms": round(self.intercept * 1e3, 3),
                "per_token_us": round(self.per_token * 1e6, 3),
                "reuse_per_token_us": None if self.reuse_per_token is None else round(self.reuse_per_token * 1e6, 3),
                "kv_us_per_mib": round(self.kv_per_byte * 2**20 * 1e6, 3),
                "bandwidth_gb_s": round(self.bandwidth / 1e9, 1), "knee_tokens": self.knee_tokens,
                "graph_floor_ms": None if self.graph_floor is None else round(self.graph_floor * 1e3, 3),
                "calibrated": self.calibrated}


def calibration_sizes(max_tokens: int) -> tuple[int, ...]:
    """Token counts to time: a small one (the floor) and two on the compute line, within the budget."""
    big = max(4, min(2048, max_tokens))
    return tuple(sorted({min(16, big // 4), big // 2, big}))


def calibrate(time_forward: Callable[[int], float], weight_bytes: int, sizes: tuple[int, ...] = (16, 512, 2048),
              repeats: int = 3, graph_time: Callable[[], float] | None = None) -> CostModel:
    """Fit from `time_forward(tokens) -> seconds` (a synchronised eager forward of that many tokens,
    warm) and, with CUDA graphs, `graph_time() -> seconds` (a replay of the smallest Reuse graph).
    The floor is the smallest eager time, the graph floor the replay's; the compute line goes through
    the two largest sizes; K/V bandwidth is taken as the weights' effective read rate (weight_bytes /
    the lowest floor). Reuse rows are priced as Refresh tokens until a refit sees them."""
    times = {n: statistics.median(time_forward(n) for _ in range(repeats)) for n in sizes}
    small, big = sorted(sizes)[0], sorted(sizes)[-2:]
    floor = times[small]
    per_token = max((times[big[1]] - times[big[0]]) / (big[1] - big[0]), 1e-9)
    intercept = min(times[big[1]] - per_token * big[1], floor)
    graph_floor = None if graph_time is None else min(floor, statistics.median(graph_time() for _ in range(repeats)))
    return CostModel(floor=floor, intercept=intercept, per_token=per_token,
                     bandwidth=max(weight_bytes / (graph_floor or floor), 1e9), graph_floor=graph_floor,
                     calibrated=True)
