"""Fit a device model to the iterations a benchmark run recorded: what one iteration really costs on
that device and model (the cost model's form, `backend.engine.scheduling.cost_model`), for `benchmarks.schedule_sim`:

    memory  = weight read + kv / bandwidth
    compute = intercept + refresh x per_token + reuse x reuse_per_token + kv x kv_per_byte
    t       = max(memory, compute), and at least the eager floor unless a CUDA graph was replayed

A GPU run (`benchmarks/gpu_runbook.sh`; the `gpu` profile keeps every iteration) then says, with no
GPU, how far the engine's cost model was from the device, and lets the schedule model replay the
policies on the measured device:

    python -m benchmarks.fit_device results/<date>-h200-gpu.json --out /tmp/h200.json
    python -m benchmarks.schedule_sim --device /tmp/h200.json --workloads burst-64 --cost exact

The fit is `backend.engine.scheduling.cost_refit.fit` (the engine refits its own cost model the same way) on every
recorded iteration, from a start the data give; the host work around the forward is fitted as a base
plus a cost per request; the shape fields (graph sizes, K/V bytes per position, pool) come from
`--base`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace

from backend.engine.scheduling.cost_model import CostModel
from backend.engine.scheduling.cost_refit import (
    COMPUTE,
    FLOOR,
    MEMORY,
    IterationRecord,
    fit,
    fit_compute,
    least_squares,
    median_error,
    piece_of,
    relative_errors,
)
from benchmarks.metrics import ITERATION_FIELDS, percentile
from benchmarks.schedule_sim import DEVICES, H200_LLADA_8B, DeviceModel


def from_columns(cols: dict) -> list[IterationRecord]:
    """Records from a benchmark result's `iterations` (benchmarks.metrics.iteration_columns)."""
    fields = [f for f in ITERATION_FIELDS if f in cols]  # older files lack the newer fields
    return [IterationRecord(**dict(zip(fields, row, strict=True))) for row in zip(*(cols[f] for f in fields),
                                                                                  strict=True)]


def load_results(path: str, variants: list[str] | None = None,
                 workloads: list[str] | None = None) -> dict[str, list[IterationRecord]]:
    """The recorded iterations of a benchmark JSON (`benchmarks.engine`) by workload, optionally a subset."""
    with open(path) as f:
        doc = json.load(f)
    out: dict[str, list[IterationRecord]] = {}
    for r in doc.get("results", []):
        if "iterations" in r and (not variants or r["variant"] in variants) and (
                not workloads or r["workload"] in workloads):
            out.setdefault(r["workload"], []).extend(from_columns(r["iterations"]))
    if not out:
        raise ValueError(f"{path}: no recorded iterations (a profile with `iteration_log`, e.g. gpu, records them)"
                         + (" for the selected variants/workloads" if variants or workloads else ""))
    return out


def holdout_errors(by_workload: dict[str, list[IterationRecord]], base: DeviceModel) -> dict[str, float]:
    """Median error (%) on each workload of the model fitted to all the others: whether the model's
    form carries over to work it has not seen, as the engine's refit must."""
    out = {}
    for name, held in by_workload.items():
        rest = [m for other, ms in by_workload.items() if other != name for m in ms]
        if len(rest) >= 8:
            out[name] = round(100 * median_error(fit_device(rest, base)[0].cost, held), 2)
    return out


def _errors_pct(errors: list[float]) -> dict:
    return {"median": round(100 * percentile(errors, 50), 2), "p95": round(100 * percentile(errors, 95), 2)}


def initial(records: list[IterationRecord], like: CostModel) -> CostModel:
    """A start from the data alone (another device's values can sit far from these): the floors from
    the fastest iterations (with graphs recorded, the weight read is the replays' floor; without, the
    eager floor is both), the compute line through the larger half of the iterations."""
    eager = [r.seconds for r in records if not r.graphed]
    graphed = [r.seconds for r in records if r.graphed]
    floor = percentile(eager, 5) if eager else like.floor
    start = replace(like, floor=floor, graph_floor=percentile(graphed, 5) if graphed else None)
    tokens = sorted(r.refresh_tokens + r.reuse_tokens for r in records)
    larger = [r for r in records if r.refresh_tokens + r.reuse_tokens >= tokens[len(tokens) // 2]]
    return fit_compute(start, larger)


def fit_host(records: list[IterationRecord], like: DeviceModel) -> DeviceModel:
    """Host work per iteration as `host_base + host_per_request x requests` (least squares; `like`'s
    values where the records carry no host times or no spread of batch sizes)."""
    timed = [r for r in records if r.host_seconds > 0]
    if len(timed) < 3 or len({r.requests for r in timed}) < 2:
        return like
    hosts = [r.host_seconds for r in timed]
    coef = least_squares([[1.0] * len(timed), [float(r.requests) for r in timed]], hosts, [1.0] * len(timed))
    if coef is None:
        return like
    base, slope = coef
    if slope < 0:  # more requests never cost less: a flat line through the mean
        base, slope = sum(hosts) / len(hosts), 0.0
    return replace(like, host_base=max(base, 0.0), host_per_request=slope)


def fit_device(records: list[IterationRecord], base: DeviceModel = H200_LLADA_8B, name: str | None = None
               ) -> tuple[DeviceModel, dict]:
    """The device model that best predicts `records`, and a report: its errors next to those of the
    cost model the engine ran with, and how many iterations each piece of the model predicts."""
    if len(records) < 8:
        raise ValueError(f"iterations: need at least 8 recorded iterations to fit, got {len(records)}")
    cost = fit(records, initial(records, base.cost))
    counts = [0, 0, 0]
    for r in records:
        counts[piece_of(cost, r)] += 1
    engine = [abs(r.predicted - r.seconds) / r.seconds for r in records if r.seconds > 0]
    report = {"iterations": len(records),
              "per_piece": {"eager_floor": counts[FLOOR], "memory": counts[MEMORY], "compute": counts[COMPUTE]},
              "fit_error_pct": _errors_pct(relative_errors(cost, records)),
              "engine_cost_model_error_pct": _errors_pct(engine)}
    return fit_host(records, replace(base, name=name or f"fitted-{base.name}", cost=cost)), report


def describe(d: DeviceModel, base: DeviceModel, report: dict) -> str:
    def rows(c: CostModel) -> list[tuple[str, float | None]]:
        return [("eager floor (ms)", c.floor * 1e3), ("graph floor: weight read (ms)",
                                                      None if c.graph_floor is None else c.graph_floor * 1e3),
                ("intercept (ms)", c.intercept * 1e3), ("Refresh token (us)", c.per_token * 1e6),
                ("Reuse row (us)", c.reuse_rate * 1e6),
                ("attention over the cache (us per MiB)", c.kv_per_byte * 2**20 * 1e6),
                ("K/V bandwidth, memory-bound (GB/s)", c.bandwidth / 1e9)]

    def fmt(x):
        return "-" if x is None else f"{x:.4g}"

    def host_rows(dev: DeviceModel) -> list[tuple[str, float]]:
        return [("host per iteration (ms)", dev.host_base * 1e3), ("host per request (us)", dev.host_per_request * 1e6)]

    lines = [f"| parameter | {d.name} | {base.name} |", "|---|---|---|"]
    lines += [f"| {n} | {fmt(v)} | {fmt(b)} |" for (n, v), (_, b) in
              zip(rows(d.cost) + host_rows(d), rows(base.cost) + host_rows(base), strict=True)]
    e, c = report["fit_error_pct"], report["engine_cost_model_error_pct"]
    lines.append(f"\n{report['iterations']} iterations, per piece {report['per_piece']}; relative error "
                 f"median / p95: fitted {e['median']} / {e['p95']} %, the engine's cost model as it ran "
                 f"{c['median']} / {c['p95']} %")
    if "holdout_error_pct" in report:
        lines.append("Median error on each workload of the model fitted to the others: " + ", ".join(
            f"{w} {e} %" for w, e in report["holdout_error_pct"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a benchmark JSON with recorded iterations")
    ap.add_argument("--variants", help="comma-separated: fit only these configurations' iterations")
    ap.add_argument("--workloads", help="comma-separated: fit only these workloads' iterations")
    ap.add_argument("--base", default=H200_LLADA_8B.name, choices=sorted(DEVICES),
                    help="the device model to start from; its shape fields (graph sizes, K/V bytes, pool) are kept")
    ap.add_argument("--name", default=None, help="the fitted model's name (default: fitted-<base>)")
    ap.add_argument("--out", default=None, help="write the fitted device model and the report here (JSON)")
    a = ap.parse_args(argv)
    try:
        by_workload = load_results(a.results, a.variants and a.variants.split(","),
                                   a.workloads and a.workloads.split(","))
        base = DEVICES[a.base]
        device, report = fit_device([m for ms in by_workload.values() for m in ms], base, a.name)
    except (OSError, ValueError, KeyError) as e:
        ap.error(str(e))
    if len(by_workload) > 1:
        report["holdout_error_pct"] = holdout_errors(by_workload, base)
    print(describe(device, base, report))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"device": asdict(device), "report": report, "source": a.results}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
