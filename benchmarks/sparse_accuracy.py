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

import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from benchmarks.accuracy_runs import common_args, held_out, print_table, score
from benchmarks.agreement import token_agreement


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sparse_accuracy", description=__doc__.split("\n\n")[0])
    common_args(ap, threads=1, batch=32)
    ap.add_argument("--retentions", default="1,0.75,0.5,0.25")
    ap.add_argument("--windows", default="0")
    ap.add_argument("--min-cached", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    examples = held_out(args.per_task)
    rows, dense_tokens = [], None
    for window in [int(w) for w in args.windows.split(",")]:
        for retention in [float(r) for r in args.retentions.split(",")]:
            if retention >= 1.0 and window and dense_tokens is not None:
                continue  # the window changes nothing for a dense cache
            engine = Engine.from_config(EngineConfig(model=args.model, device="cpu", dtype="float32",
                                                     sparse_min_cached=args.min_cached, sparse_window=window,
                                                     sparse_retention=retention, kv_cache_bytes=64 << 20))
            tokens: list[list[int]] = []
            params = engine.make_params({})  # the model's decoding defaults + the engine's sparse_retention
            scored = score(engine, params, examples, args.batch, tokens)
            if retention >= 1.0 and dense_tokens is None:
                dense_tokens = tokens
            agreement = round(token_agreement(tokens, dense_tokens), 4) if dense_tokens else None
            row = {"retention": retention, "window": window, "min_cached": args.min_cached,
                   "accuracy": scored["accuracy"], "mean_accuracy": scored["mean_accuracy"],
                   "agreement_with_dense": agreement, "seconds": scored["seconds"],
                   "agree": "-" if agreement is None else f"{agreement:.3f}"}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "agree"}), flush=True)
    print_table(rows, {"retention": "retention", "window": "window"}, {"agree": "agree"})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "per_task": args.per_task,
                       "rows": [{k: v for k, v in r.items() if k != "agree"} for r in rows]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
