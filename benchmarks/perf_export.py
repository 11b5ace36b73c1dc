"""Read what Perf Analyzer writes: its profile export (per request: send time, response times,
inputs and outputs) and its CSV summary, into the benchmark's per-request records.

For a decoupled model Perf Analyzer's own latency is the time to the *first* response, so latency
percentiles here are recomputed from the export: latency = last response - send, time to first delta
= first response - send (our model never sends an empty first response), output tokens = the sum of
the per-response `num_output_tokens` (each response counts the tokens behind it, vLLM's convention).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from benchmarks.metrics import RequestRecord

NS = 1e-9


def request_key(text: str, sampling_parameters: str) -> tuple[str, str]:
    """How an exported request is matched back to the workload item it was made from."""
    return text, sampling_parameters


def records_from_export(path: str | Path, items_by_key: dict | None = None) -> list[dict]:
    """One entry per experiment: {"mode", "value", "records": [RequestRecord]}. `items_by_key` maps
    request_key(...) to (index, WorkItem), so records get the item's kind and the answer is scored."""
    doc = json.loads(Path(path).read_text())
    out = []
    for exp in doc.get("experiments", []):
        reqs = exp.get("requests", [])
        t0 = min((r["timestamp"] for r in reqs), default=0)
        records = []
        for n, r in enumerate(sorted(reqs, key=lambda r: r["timestamp"])):
            records.append(_record(n, r, t0, items_by_key or {}))
        out.append({"mode": exp["experiment"].get("mode"), "value": exp["experiment"].get("value"),
                    "records": records})
    return out


def _record(n: int, r: dict, t0: int, items_by_key: dict) -> RequestRecord:
    inputs = r.get("request_inputs", {})
    index, item = items_by_key.get(request_key(str(inputs.get("text_input", "")),
                                               str(inputs.get("sampling_parameters", ""))), (n, None))
    times = r.get("response_timestamps") or []
    outputs = r.get("response_outputs") or []
    rec = RequestRecord(index, item.kind if item else "unknown", (r["timestamp"] - t0) * NS, 0)
    if not times:
        rec.error = "no response"
        return rec
    for t, o in zip(times, outputs, strict=False):
        if int(o.get("num_output_tokens") or 0) > 0:
            rec.delta((t - t0) * NS)
    if rec.first_delta is None:
        rec.first_delta = (times[0] - t0) * NS
    rec.finish = (times[-1] - t0) * NS
    rec.output_tokens = sum(int(o.get("num_output_tokens") or 0) for o in outputs)
    reasons = [o.get("finish_reason") for o in outputs if o.get("finish_reason")]
    rec.finish_reason = reasons[-1] if reasons else None
    if rec.finish_reason == "error":
        rec.error = "error"
    if item is not None and item.answer is not None:
        rec.correct = "".join(str(o.get("text_output", "")) for o in outputs) == item.answer
    return rec


def read_csv(path: str | Path) -> list[dict]:
    """Perf Analyzer's -f CSV: one row per load level; times in microseconds, as it writes them."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    with path.open() as f:
        for row in csv.DictReader(f):
            rows.append({k: _num(v) for k, v in row.items() if k})
    return rows


def _num(v: str):
    try:
        return float(v) if "." in v else int(v)
    except (TypeError, ValueError):
        return v
