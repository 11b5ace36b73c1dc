"""The load test's markdown report, and its comparison with the in-process engine benchmark: the
same workload at the same load (concurrency, rate, or replayed arrival times), through Triton and
in-process, and the difference in percent (the cost of the server: gRPC, the Python backend's IPC,
tokenization and detokenization, the response thread)."""

from __future__ import annotations


def _match(t: dict, engine_doc: dict) -> dict | None:
    base = engine_doc.get("baseline")
    for e in engine_doc.get("results", []):
        if e["variant"] != base:
            continue
        if t["mode"] == "concurrency" and e.get("concurrency") == t["concurrency"] and e["workload"] == t["workload"]:
            return e
        if t["mode"] == "rate" and e.get("rate") == t["rate"] and e["workload"] == t["workload"]:
            return e
        if t["mode"] == "replay" and not e.get("concurrency") and e["workload"] == t["workload"]:
            return e
    return None


def _pct(triton, engine, higher_is_better: bool) -> float | None:
    """Overhead in percent: how much worse Triton is (negative: better)."""
    if triton is None or not engine:
        return None
    return round(100.0 * ((engine - triton) if higher_is_better else (triton - engine)) / engine, 1)


def compare(results: list[dict], engine_doc: dict) -> list[dict]:
    out = []
    for t in results:
        e = _match(t, engine_doc)
        if e is None:
            continue
        ts, es = t["summary"], e["summary"]
        row = {"workload": t["workload"], "mode": t["mode"], "level": t.get("concurrency") or t.get("rate"),
               "engine_variant": e["variant"]}
        for key, tv, ev, better in (
            ("throughput_tok_s", ts["throughput_tok_s"], es["throughput_tok_s"], True),
            ("latency_p50_s", ts["latency_s"]["p50"], es["latency_s"]["p50"], False),
            ("latency_p95_s", ts["latency_s"]["p95"], es["latency_s"]["p95"], False),
            ("ttfd_p50_s", ts["ttfd_s"]["p50"], es["ttfd_s"]["p50"], False),
        ):
            row[key] = {"triton": tv, "in_process": ev, "overhead_pct": _pct(tv, ev, better)}
        if t["mode"] == "rate":  # below saturation throughput is the offered load of each run's own draws
            row["throughput_tok_s"]["overhead_pct"] = None
        out.append(row)
    return out


def _ms(v) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def _f(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pct_cell(v) -> str:
    return "n/a" if v is None else f"{v:.1f}%"


def markdown(doc: dict) -> str:
    lines = [f"Triton load test (Perf Analyzer, gRPC streaming) of `{doc['model']}` at {doc['url']}, client "
             f"machine **{doc['machine_tag']}**, {doc['created']}. Latencies in ms, recomputed from the profile "
             f"export (last response - send; TTFD = first response - send).", "",
             "| mode | level | workload | req | tok/s | req/s | lat p50 | lat p95 | lat p99 | TTFD p50 | TTFD p95 "
             "| acc |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["results"]:
        s = r["summary"]
        level = r.get("concurrency") or r.get("rate") or "-"
        acc = f"{s['accuracy']:.0%}" if "accuracy" in s else "-"
        req = f"{s['completed']}" + (f" ({s['errors']} err)" if s["errors"] else "")
        lines.append(f"| {r['mode']} | {level} | {r['workload']} | {req} | {_f(s['throughput_tok_s'])} | "
                     f"{_f(s['throughput_req_s'], 2)} | {_ms(s['latency_s']['p50'])} | {_ms(s['latency_s']['p95'])} | "
                     f"{_ms(s['latency_s']['p99'])} | {_ms(s['ttfd_s']['p50'])} | {_ms(s['ttfd_s']['p95'])} | {acc} |")
    if doc.get("comparison"):
        lines += ["", f"Against the in-process engine (`{doc.get('engine_results')}`, its baseline configuration); "
                  "overhead = how much worse through Triton, in percent. Replay sends the very same arrival "
                  "times; rate levels use Perf Analyzer's own Poisson draws, so only their latencies compare:", "",
                  "| mode | level | workload | tok/s in-process | tok/s Triton | overhead | p50 in-process "
                  "| p50 Triton | overhead | p95 overhead | TTFD p50 overhead |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for c in doc["comparison"]:
            t, p50, p95, ttfd = c["throughput_tok_s"], c["latency_p50_s"], c["latency_p95_s"], c["ttfd_p50_s"]
            lines.append(f"| {c['mode']} | {c['level'] or '-'} | {c['workload']} | {_f(t['in_process'])} | "
                         f"{_f(t['triton'])} | {_pct_cell(t['overhead_pct'])} | {_ms(p50['in_process'])} | "
                         f"{_ms(p50['triton'])} | {_pct_cell(p50['overhead_pct'])} | "
                         f"{_pct_cell(p95['overhead_pct'])} | {_pct_cell(ttfd['overhead_pct'])} |")
    return "\n".join(lines) + "\n"
