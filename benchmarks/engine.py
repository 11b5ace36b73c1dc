"""In-process engine benchmark: several engine configurations on the same workloads, in one run.

    python -m benchmarks.engine                          # profile `cpu`: the bundled model (make bench)
    python -m benchmarks.engine --profile tiny --out /tmp/b
    python -m benchmarks.engine --profile gpu --out results/   # llada-8b, random weights, bf16
    python -m benchmarks.engine --variants fcfs,static --scenarios burst --readme README.md

Writes <out>/<date>-<machine>[-<profile>].json (everything, per-request records included), a .md table
with ratios against the first configuration, PNG plots (latency CDF, load sweep) and the workloads as
JSONL under <stem>.workloads/ (replay them with `--trace` or with `benchmarks.loadtest`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from benchmarks import plots, profiles, report, workloads
from benchmarks.monitor import machine_info, machine_tag
from benchmarks.prompt_sources import make_source
from benchmarks.suite import EngineFactory, clock, prepare, prompt_ids, run_one, variant_config, warm_up

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def expand(profile: dict, source) -> list[tuple[dict, workloads.Workload]]:
    """Every (scenario, workload) of the profile, rate sweeps unrolled."""
    out = []
    gm = int(profile.get("gen_multiple", 1))
    for sc in profile["scenarios"]:
        specs = [workloads.with_rate(sc["workload"], r) for r in sc["rates"]] if sc.get("rates") else [sc["workload"]]
        out += [(sc, workloads.build(spec, source, gm)) for spec in specs]
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="cpu", help=f"one of {sorted(profiles.PROFILES)} or a JSON file")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    ap.add_argument("--model", help="override the profile's model (checkpoint dir or preset)")
    ap.add_argument("--device"), ap.add_argument("--dtype")
    ap.add_argument("--variants", help="comma-separated subset of the profile's configurations")
    ap.add_argument("--scenarios", help="comma-separated subset of the profile's workloads")
    ap.add_argument("--trace", type=Path, help="replay this JSONL trace as an extra open-loop workload")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    ap.add_argument("--max-seconds", type=float, help="abort a run's remaining requests after this long")
    ap.add_argument("--tag", help="machine name used in file names (default: derived from the hardware)")
    ap.add_argument("--readme", type=Path, help="update the benchmark block of this README")
    ap.add_argument("--readme-block", default="bench",
                    help="which block: the one between <!-- NAME:begin --> and <!-- NAME:end --> (default bench)")
    ap.add_argument("--no-plots", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = (lambda s: [x for x in s.split(",") if x] if s else None)  # noqa: E731
    prof = profiles.select(profiles.load_profile(args.profile), split(args.variants), split(args.scenarios))
    for key in ("model", "device", "dtype"):
        if getattr(args, key):
            if key == "model":
                prof["model"] = args.model
            else:
                prof.setdefault("engine", {})[key] = getattr(args, key)
    if args.trace:
        prof["scenarios"].append({"workload": {"name": args.trace.stem, "arrival": "trace", "path": str(args.trace)}})
    variants = prof["variants"]

    t_start = time.perf_counter()
    print(f"[{clock()}] loading {prof['model']} (profile {prof['name']})", flush=True)
    model_dir = Path(str(prof["model"]))
    if model_dir.is_absolute() and not (model_dir / "config.json").is_file():
        print(f"error: no checkpoint at {model_dir} (the bundled model: `python -m backend.training.train`); "
              "or pass --model <checkpoint dir | preset>", file=sys.stderr)
        return 2
    factory = EngineFactory(variant_config(prof, variants[0]))
    model = factory.model
    info = machine_info(model.device)
    tag = args.tag or machine_tag(info)
    stem = f"{time.strftime('%Y-%m-%d')}-{tag}" + ("" if prof["name"] == "cpu" else f"-{prof['name']}")
    source = make_source(prof.get("prompts", "synthetic"), model.config)
    runs = expand(prof, source)
    for _, wl in runs:
        wl.save(args.out / f"{stem}.workloads" / f"{wl.name}.jsonl")
    ids = {wl.name: [prompt_ids(i, factory.tokenizer, source) for i in wl.items] for _, wl in runs}
    print(f"[{clock()}] {info.get('gpu') or info['cpu']}; {len(variants)} configurations x "
          f"{len(runs)} workloads", flush=True)

    results = []
    engine = None
    for v in variants:
        engine = None  # drop our reference first: the factory frees the old K/V pool before sizing the next
        engine = factory.build(variant_config(prof, v))
        print(f"[{clock()}] configuration {v['name']}: engine {v.get('engine', {})} sampling {v.get('sampling', {})}; "
              f"K/V pool {engine.pool.nbytes / 2**20:.0f} MiB", flush=True)
        warmed = False
        for sc, wl in runs:
            if sc.get("variants") not in (None, "all") and v["name"] not in sc["variants"]:
                continue
            requests = prepare(engine, wl, ids[wl.name], prof, v, sc)
            if not warmed:
                warm_up(engine, requests)
                warmed = True
            label = f"{v['name']} / {wl.name}"
            res = run_one(engine, requests, sc.get("concurrency"), label, args.max_seconds or prof.get("max_seconds"),
                          keep_iterations=prof.get("iteration_log", False))
            s = res["summary"]
            print(f"[{clock()}]   {label}: {s['completed']}/{s['requests']} ok, {s['throughput_tok_s']} tok/s, "
                  f"p50 {s['latency_s']['p50']} s, p95 {s['latency_s']['p95']} s, "
                  f"tok/fwd {res['engine']['tokens_per_forward']}" +
                  (f", accuracy {s['accuracy']:.0%}" if "accuracy" in s else ""), flush=True)
            results.append({"workload": wl.name, "sweep": sc["workload"]["name"], "variant": v["name"],
                            "rate": wl.spec.get("rate") if sc.get("rates") else None,
                            "concurrency": sc.get("concurrency"), "workload_spec": wl.spec, **res})
            # What is done so far survives a run cut short (a GPU lease ending, Ctrl-C).
            report.write_json({"partial": True, "profile": prof["name"], "results": results},
                              args.out / f"{stem}.partial.json")

    report.add_ratios(results, variants[0]["name"])
    doc = {"schema": "dllm-engine-bench/1", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "profile": prof["name"],
           "machine": info, "machine_tag": tag, "model_name": str(prof["model"]), "dtype": str(model.dtype),
           "model": model.config.__dict__, "baseline": variants[0]["name"], "variants": variants,
           "scenarios": prof["scenarios"], "command": " ".join(sys.argv), "results": results,
           "seconds": round(time.perf_counter() - t_start, 1)}
    doc["model_name"] = Path(doc["model_name"]).name
    table = report.markdown_table(doc)
    plot_paths = {}
    if not args.no_plots:
        cdf = plots.latency_cdf(results, prof.get("cdf", runs[0][1].name), args.out / f"{stem}-latency-cdf.png",
                                f"latency CDF: {prof.get('cdf')} on {tag}")
        sweep = plots.load_sweep(results, args.out / f"{stem}-rate-sweep.png",
                                 title=f"Poisson rate sweep on {tag}")
        plot_paths = {k: p.name for k, p in (("latency_cdf", cdf), ("rate_sweep", sweep)) if p is not None}
        if not plot_paths:
            print("plots: skipped (matplotlib is not installed, or nothing to plot)", flush=True)
    doc["plots"] = plot_paths
    path = report.write_json(doc, args.out / f"{stem}.json")
    (args.out / f"{stem}.partial.json").unlink(missing_ok=True)
    (args.out / f"{stem}.md").write_text(table)
    print("\n" + table)
    print(f"[{clock()}] wrote {path} and {stem}.md, plots {sorted(plot_paths.values())} "
          f"({doc['seconds']} s in all)", flush=True)
    if args.readme:
        root = args.readme.resolve().parent

        def rel(p: Path) -> Path:  # links in the README are relative to it
            return p.resolve().relative_to(root) if p.resolve().is_relative_to(root) else p
        plot = rel(args.out / plot_paths["latency_cdf"]) if "latency_cdf" in plot_paths else None
        if report.update_readme(args.readme, table, plot, rel(path), args.readme_block):
            print(f"updated the {args.readme_block} block of {args.readme}")
        else:
            print(f"{args.readme}: no {report.markers(args.readme_block)[0]} block, left as it is")
    return 0


if __name__ == "__main__":
    sys.exit(main())
