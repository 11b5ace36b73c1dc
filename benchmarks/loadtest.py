"""Server load test: Perf Analyzer against the served dllm model (gRPC streaming), figures computed
from its profile export the same way as the in-process engine benchmark, and compared with it.

    make serve &                                   # or pass --start-server
    python -m benchmarks.loadtest --concurrency 1,2,4,8 --rates 1,4,16 --replay burst,mixed
    python -m benchmarks.loadtest --start-server --compare benchmarks/results/<date>-<machine>.json

Workloads are the engine benchmark profile's (`--profile cpu`: the bundled model's task prompts),
built from the same seeds, so the Triton run and the in-process run send the same requests:
`--concurrency` levels use `--workload` (closed loop, like the engine's `closed-c4`), `--rates` use the
Poisson workload (Perf Analyzer draws its own Poisson gaps at each rate), `--replay` sends a workload
at its recorded arrival times through `--request-intervals` (a saved JSONL file works too).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from benchmarks import perf_analyzer, plots, profiles, workloads
from benchmarks.loadtest_report import compare, markdown
from benchmarks.metrics import summarize
from benchmarks.monitor import machine_info, machine_tag
from benchmarks.perf_export import read_csv, records_from_export, request_key
from benchmarks.prompt_sources import TaskPrompts

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def profile_workload(prof: dict, name: str) -> tuple[dict, workloads.Workload]:
    """A scenario of the profile by workload name (`poisson@4` picks the rate), or a JSONL file."""
    if name.endswith(".jsonl"):
        return {}, workloads.load(name, TaskPrompts(), int(prof.get("gen_multiple", 1)))
    base, _, rate = name.partition("@")
    for sc in prof["scenarios"]:
        if sc["workload"]["name"] == base:
            spec = workloads.with_rate(sc["workload"], float(rate)) if rate else sc["workload"]
            return sc, workloads.build(spec, TaskPrompts(), int(prof.get("gen_multiple", 1)))
    raise ValueError(f"workload: {name!r} is not in profile {prof['name']} "
                     f"({[s['workload']['name'] for s in prof['scenarios']]}) and is not a .jsonl file")


def levels(args, prof) -> list[perf_analyzer.Level]:
    out = []
    floats = (lambda s: [float(x) for x in s.split(",") if x] if s else [])  # noqa: E731
    _, closed = profile_workload(prof, args.workload)
    for c in floats(args.concurrency):
        out.append(perf_analyzer.Level("concurrency", int(c), closed, args.request_count or len(closed.items)))
    for r in floats(args.rates):
        _, wl = profile_workload(prof, f"{args.rate_workload}@{r:g}")
        # Perf Analyzer refuses fewer requests than one second's worth; it then cycles the items.
        out.append(perf_analyzer.Level("rate", r, wl, max(args.request_count or len(wl.items), math.ceil(r))))
    for name in [x for x in (args.replay or "").split(",") if x]:
        _, wl = profile_workload(prof, name)
        out.append(perf_analyzer.Level("replay", None, wl, len(wl.items)))
    return out


def measure(level: perf_analyzer.Level, args, sampling: dict, workdir: Path) -> dict | None:
    print(f"[{time.strftime('%H:%M:%S')}] perf_analyzer {level.name}: {level.request_count} requests", flush=True)
    res = perf_analyzer.run(level, args.url, args.model, sampling, workdir, args.level_timeout)
    if res["rc"] != 0 or not res["export"].is_file():
        print(f"  failed (exit {res['rc']}), see {workdir / (level.name + '.log')}:\n{res['tail']}", flush=True)
        return None
    keyed = {request_key(i.text, perf_analyzer.sampling_json(i, sampling)): (n, i)
             for n, i in enumerate(level.workload.items)}
    exp = records_from_export(res["export"], keyed)[0]
    summary = summarize(exp["records"])
    csv_rows = read_csv(res["csv"])
    print(f"  {summary['completed']}/{summary['requests']} ok in {res['seconds']} s: "
          f"{summary['throughput_tok_s']} tok/s, p50 {summary['latency_s']['p50']} s, "
          f"p95 {summary['latency_s']['p95']} s, "
          f"TTFD p50 {summary['ttfd_s']['p50']} s", flush=True)
    workload = level.workload.name
    return {"workload": workload, "sweep": level.mode, "variant": "triton", "mode": level.mode,
            "concurrency": level.value if level.mode == "concurrency" else None,
            "rate": level.value if level.mode == "rate" else None, "summary": summary,
            "perf_analyzer_csv": csv_rows[0] if csv_rows else None, "command": " ".join(res["command"]),
            "requests": [r.to_json() for r in exp["records"]]}


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.loadtest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="localhost:8001", help="Triton gRPC address")
    ap.add_argument("--model", default="dllm")
    ap.add_argument("--profile", default="cpu", help="engine benchmark profile whose workloads are sent")
    ap.add_argument("--concurrency", help="comma-separated concurrency levels (closed loop)")
    ap.add_argument("--workload", default="closed-c4", help="workload of the concurrency levels")
    ap.add_argument("--rates", help="comma-separated Poisson request rates (requests/s)")
    ap.add_argument("--rate-workload", default="poisson", help="workload of the rate levels")
    ap.add_argument("--replay", help="comma-separated workloads (or .jsonl files) replayed at their arrival times")
    ap.add_argument("--request-count", type=int, help="requests per level (default: the workload's size)")
    ap.add_argument("--level-timeout", type=float, default=600.0, help="seconds before a level is abandoned")
    ap.add_argument("--compare", help="an engine benchmark JSON to compare with (Triton overhead); `latest`: the "
                    "newest one in --out")
    ap.add_argument("--start-server", action="store_true", help="start tritonserver on --url's port and stop it after")
    ap.add_argument("--model-repository", type=Path, help="with --start-server (default: the project's)")
    ap.add_argument("--server-threads", type=int, help="with --start-server: the engine's torch threads "
                    "(OMP_NUM_THREADS), to match the in-process run's --threads")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--tag", help="machine name used in file names")
    args = ap.parse_args(argv)
    if not (args.concurrency or args.rates or args.replay):
        args.concurrency, args.replay = "1,2,4,8", "burst"
    return args


def run_all(args, prof, stem: str) -> list[dict]:
    sampling = dict(prof.get("sampling", {}))
    workdir = args.out / f"{stem}.perf_analyzer"
    todo = levels(args, prof)
    # A few requests first, so that the first level does not pay for the server's warm-up.
    warm = perf_analyzer.Level("concurrency", 1, todo[0].workload, 2)
    perf_analyzer.run(warm, args.url, args.model, sampling, workdir / "warmup", args.level_timeout)
    return [r for r in (measure(level, args, sampling, workdir) for level in todo) if r is not None]


def latest_engine_results(folder: Path) -> Path | None:
    """The newest engine benchmark JSON in `folder` (by its `created` stamp)."""
    best = None
    for p in folder.glob("*.json"):
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(doc, dict) and doc.get("schema", "").startswith("dllm-engine-bench") and (
                best is None or doc["created"] > best[0]):
            best = (doc["created"], p)
    if best is None:
        print(f"--compare latest: no engine benchmark results in {folder}", file=sys.stderr)
    return best[1] if best else None


def write_plots(results: list[dict], engine_doc: dict | None, out: Path, stem: str, tag: str) -> list[str]:
    made = [plots.load_sweep(results, out / f"{stem}-concurrency.png", "concurrency",
                             "concurrency (requests in flight)", f"Triton + Perf Analyzer on {tag}"),
            plots.load_sweep(results, out / f"{stem}-rate-sweep.png", "rate", title=f"Triton, Poisson rates, {tag}")]
    replayed = sorted({r["workload"] for r in results if r["mode"] == "replay"})
    # A replayed workload's CDF shows the in-process baseline beside Triton, when there is one.
    base = [{**r, "variant": f"in-process {r['variant']}"} for r in (engine_doc or {}).get("results", [])
            if r["variant"] == engine_doc.get("baseline") and r["workload"] in replayed
            and not r.get("concurrency")] if engine_doc else []
    for wl in replayed:
        made.append(plots.latency_cdf(results + base, wl, out / f"{stem}-{wl}-cdf.png", f"{wl}: Triton vs in-process"))
    return [p.name for p in made if p is not None]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    prof = profiles.load_profile(args.profile)
    import torch  # only for the machine description

    info = machine_info(torch.device("cpu"))
    tag = args.tag or machine_tag(info)
    stem = f"{time.strftime('%Y-%m-%d')}-{tag}-triton"
    if args.start_server:
        from client.server_process import LocalServer

        grpc = int(args.url.rpartition(":")[2])  # HTTP and metrics on the ports beside it (8000/8001/8002)
        kw = {"model_repository": args.model_repository} if args.model_repository else {}
        if args.server_threads:
            kw["env"] = {"OMP_NUM_THREADS": str(args.server_threads)}
        print(f"[{time.strftime('%H:%M:%S')}] starting tritonserver (gRPC {grpc})", flush=True)
        with LocalServer(args.out / f"{stem}.server.log", http_port=grpc - 1, grpc_port=grpc, metrics_port=grpc + 1,
                         **kw):
            results = run_all(args, prof, stem)
    else:
        results = run_all(args, prof, stem)
    if not results:
        print("no level succeeded", file=sys.stderr)
        return 1
    if args.compare == "latest":
        args.compare = latest_engine_results(args.out)
    engine_doc = json.loads(Path(args.compare).read_text()) if args.compare else None
    comparison = compare(results, engine_doc) if engine_doc else []
    doc = {"schema": "dllm-triton-loadtest/1", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "url": args.url,
           "model": args.model, "profile": prof["name"], "machine": info, "machine_tag": tag,
           "perf_analyzer": "tritonclient 2.50.0 perf_analyzer, gRPC streaming", "results": results,
           "comparison": comparison, "engine_results": str(args.compare) if args.compare else None}
    args.out.mkdir(parents=True, exist_ok=True)
    doc["plots"] = write_plots(results, engine_doc, args.out, stem, tag)
    (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    table = markdown(doc)
    (args.out / f"{stem}.md").write_text(table)
    print("\n" + table)
    print(f"wrote {args.out / (stem + '.json')}, {stem}.md and {doc['plots']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
