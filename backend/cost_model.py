"""How long one engine iteration takes, predicted from what it computes and reads (no tensors here).

    t(tokens, kv_bytes) = max(floor + kv_bytes / bandwidth, intercept + tokens * per_token)

The first term is the memory-bound regime: every iteration reads all the weights (`floor`, what an
iteration of a few tokens costs), plus the cached K/V its Reuse rows attend to. The second is the
compute-bound regime: a cost per token through the model. Their crossing, `knee_tokens`, is where
compute, not bandwidth, becomes the limit: below it extra tokens ride along on the weight read.

`calibrate` fits the model on the actual device and model from a few timed forwards (about a second
on a GPU; the engine passes a function that runs them); `CostModel()` holds fixed defaults (the
bundled model on a 2-core CPU), which tests use so that schedules do not depend on timing.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class CostModel:
    # Defaults: what calibration measured for the bundled model on a 2-core AMD EPYC (make bench,
    # 2026-11-26): ~3 ms for any small iteration, ~115 us per token beyond, knee near 26 tokens.
    floor: float = 3e-3  # seconds: an iteration of a handful of tokens (the weight read)
    intercept: float = 0.0  # seconds: the compute line's value at 0 tokens
    per_token: float = 1.15e-4  # seconds per token through the model, once compute-bound
    bandwidth: float = 4.5e9  # bytes per second for reading cached K/V
    # A Reuse iteration replayed from a captured CUDA graph pays no launches: its floor is the weight
    # read alone (None: no graphs, every iteration is eager).
    graph_floor: float | None = None
    calibrated: bool = False

    def predict(self, tokens: int, kv_bytes: int = 0, graphed: bool = False) -> float:
        floor = self.graph_floor if graphed and self.graph_floor is not None else self.floor
        return max(floor + kv_bytes / self.bandwidth, self.intercept + tokens * self.per_token)

    @property
    def knee_tokens(self) -> int:
        """Tokens at which an iteration stops being memory-bound."""
        return max(0, int((self.floor - self.intercept) / self.per_token))

    def to_dict(self) -> dict:
        return {"floor_ms": round(self.floor * 1e3, 3), "intercept_ms": round(self.intercept * 1e3, 3),
                "per_token_us": round(self.per_token * 1e6, 3), "bandwidth_gb_s": round(self.bandwidth / 1e9, 1),
                "knee_tokens": self.knee_tokens,
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
    the lowest floor)."""
    times = {n: statistics.median(time_forward(n) for _ in range(repeats)) for n in sizes}
    small, big = sorted(sizes)[0], sorted(sizes)[-2:]
    floor = times[small]
    per_token = max((times[big[1]] - times[big[0]]) / (big[1] - big[0]), 1e-9)
    intercept = min(times[big[1]] - per_token * big[1], floor)
    graph_floor = None if graph_time is None else min(floor, statistics.median(graph_time() for _ in range(repeats)))
    return CostModel(floor=floor, intercept=intercept, per_token=per_token,
                     bandwidth=max(weight_bytes / (graph_floor or floor), 1e9), graph_floor=graph_floor,
                     calibrated=True)
