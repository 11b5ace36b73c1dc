"""The bundled model's held-out accuracy at each `max_tokens` a client may ask for (issue 22: asking
for more room than the answer needs must not change the answer).

    python -m benchmarks.length_accuracy --per-task 100 --lengths 16,32,64,128,256 --json out.json

Each length runs the engine as the server does when a request sets only `max_tokens`: `block_length`
the largest divisor up to the checkpoint's (16 for the bundled model), one token per step, greedy,
dual cache (`--cache none` gives the reference decoder's tokens exactly, at more cost; a
block-diffusion model decodes with its exact cache). Prints a table, writes JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from benchmarks.accuracy_runs import common_args, held_out, print_table, score


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.length_accuracy", description=__doc__.split("\n\n")[0])
    common_args(ap, threads=2, batch=50)
    ap.add_argument("--lengths", default="16,32,64,128,256")
    ap.add_argument("--cache", choices=["dual", "none"],
                    help="LLaDA / Dream cache mode (default: the engine's, dual; block models: their exact cache)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    examples = held_out(args.per_task)
    engine = Engine.from_config(EngineConfig(model=args.model, device="cpu", dtype="float32",
                                             kv_cache_bytes=256 << 20))
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        params = engine.make_params({"max_tokens": length, **({"cache": args.cache} if args.cache else {})})
        row = {"max_tokens": length, "block_length": params.block_length, "steps": params.steps,
               **score(engine, params, examples, args.batch)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print_table(rows, {"max_tokens": "max_tokens"})
    out = {"model": args.model, "per_task": args.per_task, "cache": args.cache,
           "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads", "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
