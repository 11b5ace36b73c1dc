"""Sparse attention where memory is the limit: the K/V pool capped to what a smaller card would leave
after the weights and activations, long prompts, dense against `sparse_retention` 0.5 and 0.25.

    python -m benchmarks.capped_pool --card-gib 24 --out capped.json      # CUDA: LLaDA-8B shape, bf16
    python -m benchmarks.capped_pool --dry-run                             # CPU: tiny model, a check

On the GPU the pool is what `gpu_memory_utilization` (0.9) of a `--card-gib` card leaves after this
engine's own profiling peak (weights, a full token budget's activations, a logit chunk), measured here
on the larger card: the same model and budgets need the same bytes on any card, so the pool is the
one a 24 GB card (RTX 4090) or a 48 GB card (L40S) would get. One engine runs one burst per retention
(`sparse_retention` is per request): concurrency (requests in a step), tok/s, latency p95 and the K/V
one request held at most. Accuracy at these retentions is the bundled model's, measured with
`benchmarks.sparse_accuracy` (results/2026-12-03-sparse-accuracy-*.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.models import random_model
from benchmarks.step_timing import run_burst

GiB = 1 << 30


def card_pool_bytes(model, cfg: EngineConfig, card_bytes: int) -> tuple[int, int]:
    """(pool bytes on a card of `card_bytes`, the profiling peak they are what is left of)."""
    from backend.engine.runner.memory_profile import kv_budget_after_profiling

    here = torch.cuda.get_device_properties(model.device).total_memory
    peak = int(here * cfg.gpu_memory_utilization) - kv_budget_after_profiling(model, cfg)
    pool = int(card_bytes * cfg.gpu_memory_utilization) - peak
    if pool <= 0:
        raise SystemExit(f"capped_pool: a {card_bytes / GiB:.0f} GiB card leaves no K/V pool after the "
                         f"{peak / GiB:.1f} GiB profiling peak")
    return pool, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.capped_pool", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny model, a pool of ~2.5 dense requests")
    ap.add_argument("--model", default="llada-8b")
    ap.add_argument("--card-gib", type=float, default=24.0, help="the card whose pool to emulate (GiB)")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=2048)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--retentions", default="1,0.5,0.25")
    ap.add_argument("--out", help="write the report here (JSON)")
    args = ap.parse_args(argv)
    retentions = [float(x) for x in args.retentions.split(",") if x]
    if args.dry_run:
        args.model, args.requests, args.prompt, args.gen, args.block = "tiny-llada", 6, 200, 32, 8
        device, dtype = torch.device("cpu"), torch.float32
    elif not torch.cuda.is_available():
        print("capped_pool: no CUDA device (use --dry-run for the CPU check)", file=sys.stderr)
        return 1
    else:
        device, dtype = torch.device("cuda"), torch.bfloat16
    cfg = EngineConfig(model=args.model, max_num_seqs=max(args.requests, 1))
    t0 = time.perf_counter()
    model = random_model(args.model, dtype, device, cfg.seed)
    per_request = model.config.kv_bytes_per_token(torch.empty(0, dtype=dtype).element_size()) * (args.prompt + args.gen)
    if args.dry_run:
        card, (pool, peak) = "cpu (dry run)", (int(2.5 * per_request), 0)
    else:
        card = f"{args.card_gib:g} GiB card, emulated on {torch.cuda.get_device_name(device)}"
        pool, peak = card_pool_bytes(model, cfg, int(args.card_gib * GiB))
    engine = Engine(model, cfg, kv_cache_bytes=pool)
    print(f"{card}: K/V pool {pool / 2**20:.0f} MiB after a {peak / GiB:.2f} GiB peak (a dense request needs "
          f"{per_request / 2**20:.0f} MiB); engine ready in {time.perf_counter() - t0:.1f} s", flush=True)
    run_burst(engine, 1, min(args.prompt, 32), args.block, args.block)  # warm-up (lazy init, allocator)
    rows = []
    for r in retentions:
        res = run_burst(engine, args.requests, args.prompt, args.gen, args.block, seed=7, sparse_retention=r)
        rows.append(res)
        print(json.dumps(res), flush=True)
    report = {"model": args.model, "card": card, "card_gib": None if args.dry_run else args.card_gib,
              "dtype": str(dtype).replace("torch.", ""), "pool_mib": round(pool / 2**20, 1),
              "profiling_peak_gib": round(peak / GiB, 2), "dense_request_mib": round(per_request / 2**20, 1),
              "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print(table(report))
    return 0


def table(report: dict) -> str:
    dense = report["rows"][0]["tok_per_s"] if report["rows"] else 0
    lines = [f"capped pool ({report['card']}, {report['model']}, pool {report['pool_mib']} MiB):",
             f"  {'retention':>9} {'concurrency max/mean':>21} {'tok/s':>8} {'x first':>8} {'p95 s':>8} "
             f"{'K/V MiB/request':>16}"]
    for r in report["rows"]:
        lines.append(f"  {r['sparse_retention']:>9} {str(r['concurrency_max']) + '/' + str(r['concurrency_mean']):>21} "
                     f"{r['tok_per_s']:>8} {r['tok_per_s'] / dense if dense else 0:>8.2f} {r['latency_s_p95']:>8} "
                     f"{r['kv_mib_per_request_max']:>16}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
