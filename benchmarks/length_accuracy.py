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
import time

import torch

from backend.engine.config import DEFAULT_MODEL, EngineConfig
from backend.engine.engine import Engine
from backend.models.tokenizer import Tokenizer
from backend.oracle.evaluate import evaluate, report
from backend.training import tasks
from benchmarks.sparse_accuracy import engine_decoder


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.length_accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--per-task", type=int, default=100)
    ap.add_argument("--lengths", default="16,32,64,128,256")
    ap.add_argument("--cache", choices=["dual", "none"],
                    help="LLaDA / Dream cache mode (default: the engine's, dual; block models: their exact cache)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=50, help="prompts per engine.generate call")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    tokenizer = Tokenizer(args.model)
    examples = tasks.held_out_set(args.per_task, tuple(tasks.TASKS), seed=tasks.EVAL_SEED)
    engine = Engine.from_config(EngineConfig(model=args.model, device="cpu", dtype="float32",
                                             kv_cache_bytes=256 << 20))
    rows = []
    for length in [int(x) for x in args.lengths.split(",")]:
        params = engine.make_params({"max_tokens": length, **({"cache": args.cache} if args.cache else {})})
        t0 = time.time()
        rep = report(evaluate(engine_decoder(engine, []), tokenizer, params, examples, batch_size=args.batch),
                     params, time.time() - t0)
        row = {"max_tokens": length, "block_length": params.block_length, "steps": params.steps,
               "accuracy": {t: round(s["accuracy"], 4) for t, s in rep["tasks"].items()},
               "mean_accuracy": round(rep["overall_accuracy"], 4), "seconds": rep["seconds"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    names = " ".join(f"{t:>7}" for t in tasks.TASKS)
    print(f"\n{'max_tokens':>10} {names} {'mean':>7}")
    for r in rows:
        accs = " ".join(f"{r['accuracy'].get(t, 0):>7.1%}" for t in tasks.TASKS)
        print(f"{r['max_tokens']:>10} {accs} {r['mean_accuracy']:>7.1%}")
    out = {"model": args.model, "per_task": args.per_task, "cache": args.cache,
           "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads", "rows": rows}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
