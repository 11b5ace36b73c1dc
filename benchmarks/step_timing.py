"""Bursts of N identical-shape requests with every engine step timed and classified by phase: what a
Reuse step and a Refresh iteration cost, and the burst's throughput (the figures of ANCHORS.md).

    python -m benchmarks.step_timing --model llada-8b --bursts 1,16,64 --out results.json   # GPU
    python -m benchmarks.step_timing --model llada-8b --bursts 1,64 --tokens-per-step 2,4     # several per step
    python -m benchmarks.step_timing --model tiny-llada --device cpu --prompt 16 --gen 32 --block 8

A step is `reuse` when every request in it takes a Reuse step, `refresh` when every one Refreshes, else
`mixed`. Step time is wall time of `Engine.step()`, which ends with the step's device-to-host copy, so
it includes all of the step's GPU work.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time

import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * (len(xs) - 1) + 0.5))]


def run_burst(engine: Engine, n: int, prompt_len: int, gen: int, block: int, seed: int = 0,
              tokens_per_step: int = 1, sparse_retention: float = 1.0) -> dict:
    """One burst of `n` requests; `tokens_per_step` > 1 commits that many tokens a step (`steps` =
    gen / tokens_per_step); `sparse_retention` < 1 makes every request sparse."""
    cfg = engine.model_config
    rng = random.Random(seed)
    vocab = [t for t in range(min(cfg.vocab_size, 30000)) if t != cfg.mask_token_id and t not in cfg.stop_token_ids]
    params = SamplingParams(max_tokens=gen, block_length=block, ignore_eos=True,
                            **({"steps": gen // tokens_per_step} if tokens_per_step > 1 else {}),
                            **({"sparse_retention": sparse_retention} if sparse_retention < 1 else {}))
    ids = [engine.add_request([rng.choice(vocab) for _ in range(prompt_len)], params) for _ in range(n)]
    runner = engine.runner
    times: dict[str, list[float]] = {"reuse": [], "refresh": [], "mixed": []}
    seen: list[tuple[str, bool]] = []
    batch_sizes: list[int] = []
    run = runner.run

    def probe(batch):  # observes each batch's phases (works on any engine version with runner.run)
        refresh = sum(ph.value == "refresh" for _, ph in batch)
        result = run(batch)
        kind = "refresh" if refresh == len(batch) else "reuse" if refresh == 0 else "mixed"
        seen.append((kind, bool(getattr(runner, "last_graphed", False))))
        batch_sizes.append(len(batch))
        return result

    runner.run = probe
    graphed = 0
    generated = 0
    finished: dict[str, float] = {}
    kv_held = 0  # the most K/V bytes one request held at any step
    pool = getattr(engine, "pool", None)
    sync = torch.cuda.synchronize if engine.model.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    try:
        while engine.has_unfinished():
            seen.clear()
            t0 = time.perf_counter()
            outs = engine.step()
            dt = time.perf_counter() - t0
            generated += sum(len(o.new_token_ids) for o in outs)
            finished.update({o.request_id: t0 + dt - start for o in outs if o.finished})
            if len(seen) == 1:
                times[seen[0][0]].append(dt)
                graphed += seen[0][1]
            if pool is not None and hasattr(pool, "bytes_held"):  # (outside the timed step)
                kv_held = max([kv_held] + [pool.bytes_held(i) for i in ids if i not in finished])
    finally:
        runner.run = run
    sync()
    wall = time.perf_counter() - start
    ms = {k: [1000 * x for x in v] for k, v in times.items()}
    latencies = [finished[i] for i in ids if i in finished]
    return {
        "n": n, "prompt": prompt_len, "gen": gen, "block": block, "tokens_per_step": tokens_per_step,
        "sparse_retention": sparse_retention, "seconds": round(wall, 3),
        "tok_per_s": round(generated / wall, 1), "generated": generated,
        "steps": {k: len(v) for k, v in ms.items()}, "graphed_steps": graphed,
        "reuse_ms_p50": round(_pct(ms["reuse"], 0.5), 2), "reuse_ms_p90": round(_pct(ms["reuse"], 0.9), 2),
        "refresh_ms_p50": round(_pct(ms["refresh"] + ms["mixed"], 0.5), 2),
        "refresh_ms_max": round(max(ms["refresh"] + ms["mixed"], default=float("nan")), 2),
        "reuse_ms_mean": round(statistics.fmean(ms["reuse"]), 2) if ms["reuse"] else float("nan"),
        "concurrency_max": max(batch_sizes, default=0),
        "concurrency_mean": round(statistics.fmean(batch_sizes), 2) if batch_sizes else 0.0,
        "latency_s_p50": round(_pct(latencies, 0.5), 3), "latency_s_p95": round(_pct(latencies, 0.95), 3),
        "kv_mib_per_request_max": round(kv_held / 2**20, 3),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.step_timing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="llada-8b")
    ap.add_argument("--device"), ap.add_argument("--dtype")
    ap.add_argument("--bursts", default="1,16,64")
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--tokens-per-step", default="1",
                    help="comma-separated: each burst at each (steps = gen / tokens per step)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=16384)
    ap.add_argument("--enforce-eager", action="store_true")
    ap.add_argument("--kv-cache-bytes", type=int)
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--label", help="a name for this engine in the table (e.g. baseline@<commit>)")
    args = ap.parse_args(argv)
    bursts = [int(x) for x in args.bursts.split(",") if x]
    per_step = [int(x) for x in args.tokens_per_step.split(",") if x]
    for k in per_step:
        if k < 1 or args.gen % k or (args.gen // k) % (args.gen // args.block):
            ap.error(f"--tokens-per-step: {k} must divide --gen {args.gen} into steps that split evenly over its "
                     f"{args.gen // args.block} blocks")
    settings = dict(model=args.model, device=args.device, dtype=args.dtype, max_num_seqs=max(bursts),
                    max_num_batched_tokens=args.max_num_batched_tokens, kv_cache_bytes=args.kv_cache_bytes)
    if args.enforce_eager:  # (only then: the pre-graphs engine, timed as a baseline, lacks the setting)
        settings["enforce_eager"] = True
    cfg = EngineConfig(**settings)
    t0 = time.perf_counter()
    engine = Engine.from_config(cfg)
    graphs = getattr(engine.runner, "graphs", None)
    captured = f"{len(graphs.graphs)} buckets in {graphs.capture_seconds:.1f} s" if graphs else "off"
    print(f"engine ready in {time.perf_counter() - t0:.1f} s on {engine.model.device} ({engine.model.dtype}); "
          f"graphs: {captured}", flush=True)
    run_burst(engine, 1, min(args.prompt, 32), args.block, args.block)  # warm-up (lazy init, allocator)
    rows = []
    for k in per_step:
        for n in bursts:
            res = run_burst(engine, n, args.prompt, args.gen, args.block, seed=n, tokens_per_step=k)
            rows.append(res)
            print(json.dumps(res), flush=True)
    device = torch.cuda.get_device_name(0) if engine.model.device.type == "cuda" else "cpu"
    report = {"model": args.model, "device": device, "dtype": str(engine.model.dtype), "label": args.label,
              "enforce_eager": args.enforce_eager, "graphs": bool(graphs), "bursts": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print(f"\n{device}, {args.model}, {args.label or ('eager' if args.enforce_eager or not graphs else 'cuda graphs')}")
    print(f"{'tok/step':>8} {'N':>4} {'tok/s':>8} {'reuse ms p50':>13} {'reuse p90':>10} {'refresh p50':>12} "
          f"{'refresh max':>12} {'graphed':>8}")
    for r in rows:
        print(f"{r['tokens_per_step']:>8} {r['n']:>4} {r['tok_per_s']:>8} {r['reuse_ms_p50']:>13} "
              f"{r['reuse_ms_p90']:>10} {r['refresh_ms_p50']:>12} {r['refresh_ms_max']:>12} "
              f"{r['graphed_steps']:>5}/{sum(r['steps'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
