"""The bundled model's held-out accuracy per task under head-centric sparse retention, and token
agreement with the dense engine (measured, not asserted).

    python -m benchmarks.sparse_accuracy --per-task 100 --retentions 1,0.75,0.5,0.25 --windows 0,4

Every configuration runs the engine (dual cache, the model's default decoding) on the same held-out
prompts; `--min-cached` (default 0 here, so that every task's prompts go sparse) sets the engine's
`sparse_min_cached`. Writes JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from backend.engine.config import DEFAULT_MODEL, EngineConfig
from backend.engine.engine import Engine
from backend.models.tokenizer import Tokenizer
from backend.oracle.evaluate import evaluate, report
from backend.training import tasks
from benchmarks.agreement import token_agreement


def engine_decoder(engine: Engine, outputs: list[list[int]]):
    def decode(prompts, params):
        res = engine.generate(prompts, params)
        outputs.extend(r.token_ids for r in res)
        return [(r.token_ids, r.forwards) for r in res]
    return decode


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sparse_accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--per-task", type=int, default=100)
    ap.add_argument("--retentions", default="1,0.75,0.5,0.25")
    ap.add_argument("--windows", default="0")
    ap.add_argument("--min-cached", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32, help="prompts per engine.generate call")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = Tokenizer(args.model)
    examples = tasks.held_out_set(args.per_task, tuple(tasks.TASKS), seed=tasks.EVAL_SEED)
    rows, dense_tokens = [], None
    for window in [int(w) for w in args.windows.split(",")]:
        for retention in [float(r) for r in args.retentions.split(",")]:
            if retention >= 1.0 and window and dense_tokens is not None:
                continue  # the window changes nothing for a dense cache
            engine = Engine.from_config(EngineConfig(model=args.model, device="cpu", dtype="float32",
                                                     sparse_min_cached=args.min_cached, sparse_window=window,
                                                     sparse_retention=retention, kv_cache_bytes=64 << 20))
            tokens: list[list[int]] = []
            t0 = time.time()
            params = engine.make_params({})  # the model's decoding defaults + the engine's sparse_retention
            scores = evaluate(engine_decoder(engine, tokens), tokenizer, params, examples, batch_size=args.batch)
            rep = report(scores, params, time.time() - t0)
            if retention >= 1.0 and dense_tokens is None:
                dense_tokens = tokens
            row = {"retention": retention, "window": window, "min_cached": args.min_cached,
                   "accuracy": {t: round(s["accuracy"], 4) for t, s in rep["tasks"].items()},
                   "mean_accuracy": round(rep["overall_accuracy"], 4),
                   "agreement_with_dense": round(token_agreement(tokens, dense_tokens), 4) if dense_tokens else None,
                   "seconds": rep["seconds"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    names = " ".join(f"{t:>7}" for t in tasks.TASKS)
    print(f"\n{'retention':>9} {'window':>6} {names} {'mean':>7} {'agree':>6}")
    for r in rows:
        accs = " ".join(f"{r['accuracy'].get(t, 0):>7.1%}" for t in tasks.TASKS)
        agree = f"{r['agreement_with_dense']:.3f}" if r["agreement_with_dense"] is not None else "-"
        print(f"{r['retention']:>9} {r['window']:>6} {accs} {r['mean_accuracy']:>7.1%} {agree:>6}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "per_task": args.per_task, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
