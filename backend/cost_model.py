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
a second on a GPU; the engine passes a function that runs them); `refine` then refits it from the
iterations the engine ran (their measured times), which also prices what the timed forwards leave
out (decoding, step inputs, Reuse rows). `CostModel()` holds fixed defaults (the bundled model on a
2-core CPU), which tests use so that schedules do not depend on timing.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace


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
        t = max(self.memory(kv_bytes), self.compute(refresh, reuse, kv_bytes))
        return t if graphed and self.graph_floor is not None else max(t, self.floor)

    def memory(self, kv_bytes: int) -> float:
        """The bandwidth-bound piece: the weight read and the cached K/V."""
        return (self.floor if self.graph_floor is None else self.graph_floor) + kv_bytes / self.bandwidth

    def compute(self, refresh: int, reuse: int, kv_bytes: int) -> float:
        """The compute-bound piece: every token through the model, and the attention over the cache."""
        rate = self.per_token if self.reuse_per_token is None else self.reuse_per_token
        return self.intercept + refresh * self.per_token + reuse * rate + kv_bytes * self.kv_per_byte

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
    the lowest floor). Reuse rows are priced as Refresh tokens until `refine` sees them."""
    times = {n: statistics.median(time_forward(n) for _ in range(repeats)) for n in sizes}
    small, big = sorted(sizes)[0], sorted(sizes)[-2:]
    floor = times[small]
    per_token = max((times[big[1]] - times[big[0]]) / (big[1] - big[0]), 1e-9)
    intercept = min(times[big[1]] - per_token * big[1], floor)
    graph_floor = None if graph_time is None else min(floor, statistics.median(graph_time() for _ in range(repeats)))
    return CostModel(floor=floor, intercept=intercept, per_token=per_token,
                     bandwidth=max(weight_bytes / (graph_floor or floor), 1e9), graph_floor=graph_floor,
                     calibrated=True)


# --- refitting from measured iterations --------------------------------------------------------------
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


def pieces(c: CostModel, r) -> tuple[float, float, float]:
    """The floor, memory and compute pieces' predictions for one record (the floor only binds eager steps)."""
    eager = not (r.graphed and c.graph_floor is not None)
    return (c.floor if eager else float("-inf"), c.memory(r.kv_bytes),
            c.compute(r.refresh_tokens, r.reuse_tokens, r.kv_bytes))


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


def _solve(columns: list[list[float]], target: list[float], seconds: list[float]) -> list[float] | None:
    """Least squares on error relative to `seconds` (normal equations, Gaussian elimination); None when
    the columns do not determine the coefficients."""
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
        coef = _solve(cols, [a - b for a, b in zip(t, fixed, strict=True)], t)
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
        coef = _solve([[1.0] * len(recs), kv], t, t)
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
        new = [max(range(3), key=p.__getitem__) for p in (pieces(c, r) for r in records)]
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

    def observe(self, cost: CostModel, record: IterationRecord) -> CostModel:
        """`cost`, or its refit once this record makes one due and the refit predicts better."""
        self.window.append(record)
        self.iterations += 1
        if not cost.calibrated or not refine_due(self.iterations):
            return cost
        self.anchor = self.anchor or cost
        refined = refine(cost, self.window, self.anchor)
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
