"""Refitting the cost model to the iterations the engine measured (no tensors here).

The start-up calibration times bare forwards; what an iteration really costs also holds decoding,
step inputs, Reuse rows and the attention over the cache. `fit` finds the `CostModel` that best
predicts measured `IterationRecord`s (piecewise least squares on relative error); `Refitter` keeps
the engine's latest iterations and refits a calibrated model when due, taking the refit only when it
predicts them better. `benchmarks.fit_device` fits a device model for the schedule model the same way.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

from backend.engine.scheduling.cost_model import CostModel

log = logging.getLogger(__name__)


@dataclass
class IterationRecord:
    """One engine iteration, as measured (the engine's log, the schedule model's, benchmark JSON)."""
    seconds: float  # wall time of the iteration's forward and decode
    predicted: float  # the cost model's prediction for what it computed and read
    refresh_tokens: int
    reuse_tokens: int
    requests: int
    kv_bytes: int = 0  # cached K/V the Reuse rows read
    graphed: bool = False  # replayed from a captured CUDA graph
    host_seconds: float = 0.0  # the rest of the engine's step: scheduling, commits, stop checks, outputs


FLOOR, MEMORY, COMPUTE = 0, 1, 2


def piece_of(c: CostModel, r) -> int:
    """FLOOR, MEMORY or COMPUTE: the piece of `c` that sets the predicted time of record `r`."""
    p = c.pieces(r.refresh_tokens, r.reuse_tokens, r.kv_bytes, r.graphed)
    return max(range(3), key=p.__getitem__)


def relative_errors(c: CostModel, records: Sequence) -> list[float]:
    return [abs(c.predict(r.refresh_tokens, r.reuse_tokens, r.kv_bytes, r.graphed) - r.seconds) / r.seconds
            for r in records if r.seconds > 0]


def median_error(c: CostModel, records: Sequence) -> float:
    errors = relative_errors(c, records)
    return statistics.median(errors) if errors else float("inf")


def mean_error(c: CostModel, records: Sequence) -> float:
    """Mean relative error: unlike the median, it sees the few large iterations the policy decides on."""
    errors = relative_errors(c, records)
    return statistics.fmean(errors) if errors else float("inf")


def least_squares(columns: list[list[float]], target: list[float], seconds: list[float]) -> list[float] | None:
    """Least squares on error relative to `seconds` (all ones: absolute error; normal equations, Gaussian
    elimination); None when the columns do not determine the coefficients."""
    n = len(columns)
    rows = [[col[i] / s for col in columns] + [target[i] / s] for i, s in enumerate(seconds)]
    m = [[sum(row[a] * row[b] for row in rows) for b in range(n + 1)] for a in range(n)]
    for k in range(n):
        pivot = max(range(k, n), key=lambda i: abs(m[i][k]))
        if abs(m[pivot][k]) < 1e-12 * max(1.0, max(abs(m[i][i]) for i in range(n))):
            return None
        m[k], m[pivot] = m[pivot], m[k]
        for i in range(k + 1, n):
            f = m[i][k] / m[k][k]
            m[i] = [a - f * b for a, b in zip(m[i], m[k], strict=True)]
    coef = [0.0] * n
    for k in range(n - 1, -1, -1):
        coef[k] = (m[k][n] - sum(m[k][j] * coef[j] for j in range(k + 1, n))) / m[k][k]
    return coef


def fit_compute(c: CostModel, recs: list) -> CostModel:
    """The compute piece through the records it predicts. A coefficient no record has a term for keeps
    its value. The records may not place every coefficient (a steady batch: one step size; a burst's
    cache growing with its rows), so each subset is fitted with the rest kept (all; without the K/V
    term; through the current intercept; both), and the fit with no negative rate that predicts the
    records best wins; where none does, `c` is returned."""
    if len(recs) < 3:
        return c
    t = [r.seconds for r in recs]
    terms = {"per_token": [float(r.refresh_tokens) for r in recs],
             "reuse_per_token": [float(r.reuse_tokens) for r in recs],
             "kv_per_byte": [float(r.kv_bytes) for r in recs]}
    terms = {name: xs for name, xs in terms.items() if any(xs)}
    if not terms.keys() - {"kv_per_byte"}:
        return c
    best, best_error = c, float("inf")
    for free_intercept, free_kv in ((True, True), (True, False), (False, True), (False, False)):
        names = [n for n in terms if free_kv or n != "kv_per_byte"]
        fixed = [0.0 if free_intercept else c.intercept] * len(recs)
        if not free_kv and "kv_per_byte" in terms:
            fixed = [f + x * c.kv_per_byte for f, x in zip(fixed, terms["kv_per_byte"], strict=True)]
        cols = ([[1.0] * len(recs)] if free_intercept else []) + [terms[n] for n in names]
        coef = least_squares(cols, [a - b for a, b in zip(t, fixed, strict=True)], t)
        if coef is None or min(coef[1:] if free_intercept else coef) < 0:
            continue
        intercept = coef.pop(0) if free_intercept else c.intercept
        candidate = replace(c, intercept=intercept, **dict(zip(names, coef, strict=True)))
        error = statistics.fmean(abs(candidate.compute(r.refresh_tokens, r.reuse_tokens, r.kv_bytes) - r.seconds)
                                 / r.seconds for r in recs)
        if error < best_error:
            best, best_error = candidate, error
    return best


def _fit_memory(c: CostModel, recs: list) -> CostModel:
    """The weight read (and K/V bandwidth, when the K/V read varies enough) of memory-bound records."""
    if not recs:
        return c
    t, kv = [r.seconds for r in recs], [float(r.kv_bytes) for r in recs]
    weights = None
    if len(recs) >= 3 and max(kv) - min(kv) > 0.1 * max(max(kv), 1.0):
        coef = least_squares([[1.0] * len(recs), kv], t, t)
        if coef is not None and coef[1] > 0:
            weights, c = coef[0], replace(c, bandwidth=1 / coef[1])
    if weights is None:
        weights = statistics.median(s - b / c.bandwidth for s, b in zip(t, kv, strict=True))
    return replace(c, graph_floor=weights) if c.graph_floor is not None else replace(c, floor=weights)


def fit(records: Sequence, start: CostModel, rounds: int = 30) -> CostModel:
    """The cost model that best predicts `records` (relative error), from `start`: give each record to
    the piece that predicts it highest, refit each piece on its records (floor: their median; memory
    and compute: least squares), until no record changes piece. With no CUDA graphs the floor is also
    the memory piece's weight read. Pieces no record falls on keep `start`'s values; the round that
    predicts `records` best (mean relative error) is returned."""
    records = [r for r in records if r.seconds > 0]  # errors are relative to the time
    c, assigned = start, None
    best, best_error = start, mean_error(start, records)
    for _ in range(rounds):
        new = [piece_of(c, r) for r in records]
        if new == assigned:
            break
        assigned = new
        by_piece = [[r for r, k in zip(records, assigned, strict=True) if k == piece] for piece in range(3)]
        if by_piece[FLOOR] and c.graph_floor is not None:
            c = replace(c, floor=statistics.median(r.seconds for r in by_piece[FLOOR]))
        c = _fit_memory(c, by_piece[MEMORY] + (by_piece[FLOOR] if c.graph_floor is None else []))
        c = fit_compute(c, by_piece[COMPUTE])
        if c.graph_floor is not None:
            c = replace(c, graph_floor=min(c.graph_floor, c.floor))  # a replay never costs more than launching
        # Alternating need not improve every round (a piece's records change under it): keep the best.
        if (error := mean_error(c, records)) < best_error:
            best, best_error = c, error
    return best


REFINE_WINDOW = 1024  # the latest iterations a refit looks at


def refine_due(iterations: int) -> bool:
    """When a calibrated model is refitted: soon after start-up (the timed forwards priced neither
    decoding nor Reuse rows), then every 512 iterations."""
    return iterations in (64, 128, 256) or (iterations > 0 and iterations % 512 == 0)


class Refitter:
    """The latest measured iterations, and a calibrated model refitted to them when due (a fixed one
    is returned as it is: tests, and schedules that must not depend on timing)."""

    def __init__(self):
        self.window: deque[IterationRecord] = deque(maxlen=REFINE_WINDOW)
        self.iterations = 0
        self.refits = 0
        self.anchor: CostModel | None = None  # the model as calibrated at start
        self.enabled = True  # off after a refit raised

    def observe(self, cost: CostModel, record: IterationRecord) -> CostModel:
        """`cost`, or its refit once this record makes one due and the refit predicts better. A refit
        is a refinement, not a duty: if one raises, it is logged, `cost` kept and no refit tried again
        (it runs inside the engine's step, where an exception would stop the engine)."""
        self.window.append(record)
        self.iterations += 1
        if not (self.enabled and cost.calibrated and refine_due(self.iterations)):
            return cost
        self.anchor = self.anchor or cost
        try:
            refined = refine(cost, self.window, self.anchor)
        except Exception:
            log.exception("cost model refit failed; keeping the current model and refitting no more")
            self.enabled = False
            return cost
        self.refits += refined is not cost
        return refined


# A Refresh token's rate is what the start-up calibration times directly (a forward of fresh tokens);
# a refit that strays further than this from it has fitted a window that cannot place it.
RATE_LEEWAY = 4.0


def refine(current: CostModel, records: Sequence, anchor: CostModel | None = None) -> CostModel:
    """`current` refitted to recently measured iterations, if that predicts them better on average
    and keeps the Refresh rate within `RATE_LEEWAY` of `anchor`'s (else `current`)."""
    if len(records) < 8:
        return current
    candidate = fit(records, current)
    if anchor is not None and not 1 / RATE_LEEWAY <= candidate.per_token / anchor.per_token <= RATE_LEEWAY:
        return current
    return candidate if mean_error(candidate, records) < mean_error(current, records) else current
