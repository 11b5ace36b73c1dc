"""Results on disk: the JSON document, a markdown table with ratios against the baseline, and the
README's benchmark block (between two marker comments, so nothing else in the README is touched)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from benchmarks.metrics import ratio
from benchmarks.profiles import SCHEDULERS  # the variants that differ only in the scheduling policy

README_BEGIN = "<!-- bench:begin -->"
README_END = "<!-- bench:end -->"


def markers(block: str = "bench") -> tuple[str, str]:
    """The README markers of a benchmark block (`bench`: the bundled LLaDA model's; one per profile family)."""
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"


def add_ratios(results: list[dict], baseline: str) -> None:
    """Per workload, each variant's throughput, p95 latency and peak memory over the baseline's."""
    base = {r["workload"]: r for r in results if r["variant"] == baseline}
    for r in results:
        b = base.get(r["workload"])
        if b is None:
            continue
        s, bs = r["summary"], b["summary"]
        r["ratios"] = {
            "throughput": ratio(s["throughput_tok_s"], bs["throughput_tok_s"]),
            "latency_p95": ratio(s["latency_s"]["p95"], bs["latency_s"]["p95"]),
            "ttfd_p50": ratio(s["ttfd_s"]["p50"], bs["ttfd_s"]["p50"]),
            "peak_memory": ratio(peak_mib(r), peak_mib(b)),
        }


def peak_mib(result: dict) -> float | None:
    mem = result.get("memory", {})
    return mem.get("cuda_max_allocated_mib", mem.get("peak_rss_mib"))


def _f(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _ms(v) -> str:
    return "-" if v is None else f"{v * 1000:.0f}"


def markdown_table(doc: dict) -> str:
    m = doc["machine"]
    where = m.get("gpu") or f"{m['cpu']} ({m['cores']} cores, {m['torch_threads']} torch threads)"
    mem = "CUDA peak MiB" if m.get("gpu") else "peak RSS MiB"
    lines = [
        f"Engine benchmark `{doc['profile']}` on **{doc['machine_tag']}** ({where}), model `{doc['model_name']}` "
        f"({doc['dtype']}), {doc['created']}. Latencies in ms; x = ratio to `{doc['baseline']}` on the same workload.",
        "",
        f"| workload | config | req | tok/s | req/s | lat p50 | lat p95 | lat p99 | TTFD p50 | TTFD p95 | tok/fwd "
        f"| batch | {mem} | acc | x tok/s | x p95 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        s, e, x = r["summary"], r.get("engine", {}), r.get("ratios", {})
        req = f"{s['completed']}" + (f" ({s['errors']} err)" if s["errors"] else "")
        acc = f"{s['accuracy']:.0%}" if "accuracy" in s else "-"
        lines.append(
            f"| {r['workload']} | {r['variant']} | {req} | {_f(s['throughput_tok_s'], 1)} | "
            f"{_f(s['throughput_req_s'])} | {_ms(s['latency_s']['p50'])} | {_ms(s['latency_s']['p95'])} | "
            f"{_ms(s['latency_s']['p99'])} | {_ms(s['ttfd_s']['p50'])} | {_ms(s['ttfd_s']['p95'])} | "
            f"{_f(e.get('tokens_per_forward'))} | {_f(e.get('mean_batch'), 1)} | {_f(peak_mib(r), 0)} | {acc} | "
            f"{_f(x.get('throughput'))} | {_f(x.get('latency_p95'))} |")
    by_kind = [r for r in doc["results"] if "by_kind" in r["summary"]]
    if by_kind:
        kinds = sorted({k for r in by_kind for k in r["summary"]["by_kind"]})
        lines += ["", "Latency by request class (ms, p50 / p95):", "",
                  "| workload | config | " + " | ".join(kinds) + " |", "|---|---|" + "---|" * len(kinds)]
        for r in by_kind:
            cells = []
            for k in kinds:
                d = r["summary"]["by_kind"].get(k, {}).get("latency_s", {})
                cells.append(f"{_ms(d.get('p50'))} / {_ms(d.get('p95'))}")
            lines.append(f"| {r['workload']} | {r['variant']} | " + " | ".join(cells) + " |")
    # The policies and their tunings (named `<policy>-...`, e.g. phase-spread-0.5).
    sched = [r for r in doc["results"] if r["variant"].split("-")[0] in SCHEDULERS
             and r.get("engine", {}).get("iteration_ms")]
    if sched:
        lines += ["", "Schedulers: inter-delta latency p99 (ITL, what a streaming client waits between updates), "
                  "iteration times (ms) and their spread (max / median), the cost model's median "
                  "prediction error, the most Refresh tokens in one iteration:", "",
                  "| workload | config | tok/s | lat p95 | TTFD p95 | ITL p99 | iter p50 | iter p95 | iter max "
                  "| max/median | model err % | max Refresh tok |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sched:
            s, e = r["summary"], r["engine"]
            it = e["iteration_ms"]
            lines.append(f"| {r['workload']} | {r['variant']} | {_f(s['throughput_tok_s'], 1)} | "
                         f"{_ms(s['latency_s']['p95'])} | {_ms(s['ttfd_s']['p95'])} | "
                         f"{_ms(s.get('itl_s', {}).get('p99'))} | {_f(it['p50'], 1)} | "
                         f"{_f(it['p95'], 1)} | {_f(it['max'], 1)} | {_f(e.get('iteration_spread'))} | "
                         f"{_f(e.get('cost_model_error_pct'), 1)} | {_f(e.get('refresh_tokens_per_iteration_max'))} |")
    long = [r for r in doc["results"] if r["workload"].startswith("longctx")]
    if long:
        lines += ["", "Long context, dense and sparse K/V (K/V MiB per request: the most a request held; "
                  "peak running: requests admitted at once):", "",
                  "| workload | config | tok/s | lat p95 | K/V MiB per request | peak running | acc |",
                  "|---|---|---|---|---|---|---|"]
        for r in long:
            s, e = r["summary"], r.get("engine", {})
            acc = f"{s['accuracy']:.0%}" if "accuracy" in s else "-"
            lines.append(f"| {r['workload']} | {r['variant']} | {_f(s['throughput_tok_s'], 1)} | "
                         f"{_ms(s['latency_s']['p95'])} | {_f(e.get('kv_mib_per_request'), 3)} | "
                         f"{_f(e.get('peak_running'))} | {acc} |")
    return "\n".join(lines) + "\n"


def write_json(doc: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def update_readme(readme: Path, table: str, plot: Path | None, source: Path, block: str = "bench") -> bool:
    """Replace the block between the markers; False (README untouched) when the markers are missing."""
    text = readme.read_text()
    begin, end = markers(block)
    if begin not in text or end not in text:
        return False
    body = [f"Latest `make bench` results (from `{source.as_posix()}`):", "", table.rstrip()]
    if plot is not None:
        body += ["", f"![latency CDF]({plot.as_posix()})"]
    new_block = f"{begin}\n" + "\n".join(body) + f"\n{end}"
    new = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: new_block, text, flags=re.S)
    readme.write_text(new)
    return True
