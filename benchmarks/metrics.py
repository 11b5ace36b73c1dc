"""Per-request records and the figures computed from them, the same for the in-process engine
benchmark and for Perf Analyzer runs through Triton (so the two can be compared line by line).

Definitions (times in seconds):
- latency: finish - arrival (arrival is the scheduled time in open loop, the send time in closed loop);
- time to first delta (TTFD): first non-empty delta - arrival;
- inter-delta latency (ITL): the time between two successive non-empty deltas of a request (what a
  streaming client waits between updates; a long iteration shows here for everyone running);
- throughput: generated tokens (streamed output tokens) / (last finish - first arrival);
- requests/s: completed requests over the same span.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

PERCENTILES = (50, 95, 99)


@dataclass
class RequestRecord:
    index: int
    kind: str
    arrival: float
    prompt_tokens: int
    first_delta: float | None = None
    finish: float | None = None
    output_tokens: int = 0
    forwards: int = 0
    finish_reason: str | None = None
    error: str | None = None
    correct: bool | None = None  # exact match with the task's answer, when it has one
    token_ids: list[int] = field(default_factory=list, repr=False)
    gaps: list[float] = field(default_factory=list, repr=False)  # between successive non-empty deltas
    last_delta: float | None = field(default=None, repr=False)

    def delta(self, now: float) -> None:
        """A non-empty delta arrived at `now`."""
        if self.first_delta is None:
            self.first_delta = now
        else:
            self.gaps.append(now - self.last_delta)
        self.last_delta = now

    def to_json(self) -> dict:
        out = {k: v for k, v in self.__dict__.items() if k not in ("token_ids", "gaps", "last_delta")}
        out["max_gap"] = round(max(self.gaps), 6) if self.gaps else None
        for k in ("arrival", "first_delta", "finish"):
            if out[k] is not None:
                out[k] = round(out[k], 6)
        return out

    @classmethod
    def from_json(cls, d: dict) -> RequestRecord:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), without numpy."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def distribution(values: list[float]) -> dict:
    out = {"mean": sum(values) / len(values) if values else None}
    out.update({f"p{q}": percentile(values, q) for q in PERCENTILES})
    out["max"] = max(values) if values else None
    return {k: (round(v, 6) if v is not None else None) for k, v in out.items()}


def summarize(records: list[RequestRecord]) -> dict:
    ok = [r for r in records if r.error is None and r.finish is not None]
    span = 0.0
    if ok:
        span = max(r.finish for r in ok) - min(r.arrival for r in records)
    tokens = sum(r.output_tokens for r in ok)
    scored = [r.correct for r in ok if r.correct is not None]
    out = {
        "requests": len(records),
        "completed": len(ok),
        "errors": len(records) - len(ok),
        "duration_s": round(span, 4),
        "prompt_tokens": sum(r.prompt_tokens for r in ok),
        "output_tokens": tokens,
        "throughput_tok_s": round(tokens / span, 3) if span > 0 else None,
        "throughput_req_s": round(len(ok) / span, 4) if span > 0 else None,
        "latency_s": distribution([r.finish - r.arrival for r in ok]),
        "ttfd_s": distribution([r.first_delta - r.arrival for r in ok if r.first_delta is not None]),
        "itl_s": distribution([g for r in ok for g in r.gaps]),
    }
    if scored:
        out["accuracy"] = round(sum(scored) / len(scored), 4)
    kinds = sorted({r.kind for r in ok})
    if len(kinds) > 1:  # e.g. short chat vs long context: does one class pay for the other?
        out["by_kind"] = {k: {"completed": sum(r.kind == k for r in ok),
                              "latency_s": distribution([r.finish - r.arrival for r in ok if r.kind == k]),
                              "ttfd_s": distribution([r.first_delta - r.arrival for r in ok
                                                      if r.kind == k and r.first_delta is not None])}
                          for k in kinds}
    return out


def ratio(value, base) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 3)


def iteration_stats(log) -> dict:
    """Engine iterations (anything with `seconds`, `predicted`, `refresh_tokens`: the engine's
    IterationRecord, also the schedule model's): times (ms), their spread (max / median), the
    cost model's median prediction error, the most Refresh tokens one iteration carried."""
    if not log:
        return {}
    ms = sorted(1000 * it.seconds for it in log)
    errors = sorted(abs(it.predicted - it.seconds) / it.seconds for it in log if it.seconds > 0)
    median = ms[len(ms) // 2]
    return {"iteration_ms": {"p50": round(median, 2), "p95": round(ms[int(0.95 * (len(ms) - 1))], 2),
                             "max": round(ms[-1], 2)},
            "iteration_spread": round(ms[-1] / median, 2) if median > 0 else None,
            "cost_model_error_pct": round(100 * errors[len(errors) // 2], 1) if errors else None,
            "refresh_tokens_per_iteration_max": max(it.refresh_tokens for it in log)}


ITERATION_FIELDS = ("seconds", "predicted", "refresh_tokens", "reuse_tokens", "requests", "kv_bytes", "graphed",
                    "host_seconds")


def iteration_columns(log) -> dict:
    """Engine iterations as columns (one list per field, compact in JSON): the raw data behind
    `iteration_stats`, which `benchmarks.fit_device` fits a device model to."""
    cols = {f: [getattr(it, f) for it in log] for f in ITERATION_FIELDS}
    for f in ("seconds", "predicted", "host_seconds"):  # to the 0.1 us
        cols[f] = [round(x, 7) for x in cols[f]]
    cols["graphed"] = [int(x) for x in cols["graphed"]]
    return cols
