"""What the held-out accuracy benchmarks share (`length_accuracy`, `sparse_accuracy`): their common
options, the engine as a decoder of the fixed held-out set, one scored row per engine setting, and
the table they print."""

from __future__ import annotations

import argparse
import time

from backend.engine.config import DEFAULT_MODEL
from backend.engine.engine import Engine
from backend.oracle.evaluate import evaluate, report
from backend.training import tasks


def common_args(ap: argparse.ArgumentParser, threads: int, batch: int) -> None:
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--per-task", type=int, default=100)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--batch", type=int, default=batch, help="prompts per engine.generate call")
    ap.add_argument("--json")


def held_out(per_task: int) -> list[tasks.Example]:
    return tasks.held_out_set(per_task, tuple(tasks.TASKS), seed=tasks.EVAL_SEED)


def engine_decoder(engine: Engine, outputs: list[list[int]]):
    """`evaluate`'s decoder over the engine; every answer's tokens are appended to `outputs`."""
    def decode(prompts, params):
        res = engine.generate(prompts, params)
        outputs.extend(r.token_ids for r in res)
        return [(r.token_ids, r.forwards) for r in res]
    return decode


def score(engine: Engine, params, examples: list[tasks.Example], batch: int,
          tokens: list[list[int]] | None = None) -> dict:
    """Accuracy per task, the mean, and seconds, of the engine decoding `examples` with `params`."""
    t0 = time.time()
    scores = evaluate(engine_decoder(engine, [] if tokens is None else tokens), engine.tokenizer, params,
                      examples, batch_size=batch)
    rep = report(scores, params, time.time() - t0)
    return {"accuracy": {t: round(s["accuracy"], 4) for t, s in rep["tasks"].items()},
            "mean_accuracy": round(rep["overall_accuracy"], 4), "seconds": rep["seconds"]}


def print_table(rows: list[dict], lead: dict[str, str], tail: dict[str, str] | None = None) -> None:
    """One line per row: the `lead` columns (header -> row key), each task's accuracy, the mean, then
    the `tail` columns (already formatted strings)."""
    tail = tail or {}
    head = [f"{h:>10}" for h in lead] + [f"{t:>7}" for t in tasks.TASKS] + [f"{'mean':>7}"] + \
        [f"{h:>6}" for h in tail]
    print("\n" + " ".join(head))
    for r in rows:
        cells = [f"{r[k]!s:>10}" for k in lead.values()] + [f"{r['accuracy'].get(t, 0):>7.1%}" for t in tasks.TASKS]
        cells += [f"{r['mean_accuracy']:>7.1%}"] + [f"{r[k]!s:>6}" for k in tail.values()]
        print(" ".join(cells))
