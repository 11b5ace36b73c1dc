"""Exact-match accuracy of a model on the fixed held-out task set, with any decoder.

    python -m backend.oracle.evaluate --model model_repository/dllm/1/default-model [--steps 16] [--json out.json]

Decoding settings start from the model's generation_config.json; options override them. A decoder
is any callable `(prompts: list[list[int]], params: SamplingParams) -> list[(token_ids, forwards)]`,
so an engine can be scored with the same set and the same report as the reference decoder.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from backend.engine.block_params import params_for_model
from backend.engine.sampling_params import SamplingParams, checkpoint_defaults
from backend.models.loader import load_model
from backend.models.tokenizer import Tokenizer
from backend.oracle import reference
from backend.training import tasks

Decoder = Callable[[list[list[int]], SamplingParams], list[tuple[list[int], int]]]


def reference_decoder(model, stop_token_ids: list[int] | None = None) -> Decoder:
    """The oracle decoder, one prompt at a time."""
    def decode(prompts: list[list[int]], params: SamplingParams) -> list[tuple[list[int], int]]:
        outs = [reference.generate(model, p, params, stop_token_ids) for p in prompts]
        return [(o.tokens, o.forwards) for o in outs]
    return decode


@dataclass
class TaskScore:
    correct: int = 0
    total: int = 0
    forwards: int = 0
    failures: list[dict] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def default_params(model_dir: str | Path) -> dict:
    return checkpoint_defaults(model_dir)


def evaluate(decoder: Decoder, tokenizer: Tokenizer, params: SamplingParams, examples: list[tasks.Example],
             batch_size: int = 8, progress: bool = False) -> dict[str, TaskScore]:
    scores: dict[str, TaskScore] = {}
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        results = decoder([tokenizer.encode(ex.prompt) for ex in chunk], params)
        for ex, (ids, forwards) in zip(chunk, results, strict=True):
            s = scores.setdefault(ex.task, TaskScore())
            got = tokenizer.decode(ids)
            s.total += 1
            s.forwards += forwards
            if got == ex.answer:
                s.correct += 1
            else:
                s.failures.append({"prompt": ex.prompt, "answer": ex.answer, "got": got})
        if progress:
            print(f"  {min(i + batch_size, len(examples))}/{len(examples)}", end="\r", flush=True)
    if progress:
        print(" " * 20, end="\r")
    return scores


def report(scores: dict[str, TaskScore], params: SamplingParams, seconds: float) -> dict:
    overall = sum(s.accuracy for s in scores.values()) / max(1, len(scores))
    total = sum(s.total for s in scores.values())
    forwards = sum(s.forwards for s in scores.values())
    return {
        "params": params.to_dict(),
        "tasks": {t: {"accuracy": s.accuracy, "correct": s.correct, "total": s.total,
                      "forwards_per_prompt": s.forwards / s.total, "failures": s.failures[:10]}
                  for t, s in scores.items()},
        "overall_accuracy": overall,  # the mean over tasks (each task weighs the same)
        "examples": total,
        "forwards": forwards,
        "forwards_per_prompt": forwards / max(1, total),
        "seconds": round(seconds, 1),
    }


def print_report(rep: dict) -> None:
    p = rep["params"]
    mode = f"threshold={p['threshold']}" if p["threshold"] is not None else f"steps={p['steps']}"
    print(f"decoding: max_tokens={p['max_tokens']} block_length={p['block_length']} {mode} "
          f"temperature={p['temperature']} " + (f"alg={p['alg']}" if p.get("alg") else f"remasking={p['remasking']}"))
    print(f"{'task':<10}{'accuracy':>10}{'correct':>10}{'forwards/prompt':>18}")
    for t, r in rep["tasks"].items():
        print(f"{t:<10}{r['accuracy']:>10.1%}{r['correct']:>6}/{r['total']:<3}{r['forwards_per_prompt']:>18.1f}")
    print(f"{'overall':<10}{rep['overall_accuracy']:>10.1%}{'':>10}{rep['forwards_per_prompt']:>18.1f}")
    print(f"denoising steps per prompt (configured): {p['steps'] if p['steps'] is not None else 'threshold'}; "
          f"model forwards: {rep['forwards']} in total; {rep['seconds']} s")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (config.json, safetensors, tokenizer)")
    ap.add_argument("--per-task", type=int, default=50, help="held-out examples per task")
    ap.add_argument("--tasks", default=",".join(tasks.TASKS))
    ap.add_argument("--seed", type=int, default=tasks.EVAL_SEED, help="held-out set seed")
    ap.add_argument("--json", help="write the report here")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float64"])
    ap.add_argument("--device", default="cpu", help="e.g. cuda; answers do not depend on it beyond rounding")
    for name in ("max-tokens", "block-length", "steps", "seed-decode"):
        ap.add_argument(f"--{name}", type=int)
    ap.add_argument("--threshold", type=float)
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--remasking", choices=["low_confidence", "random"], help="LLaDA models")
    ap.add_argument("--alg", choices=["origin", "maskgit_plus", "topk_margin", "entropy"], help="Dream models")
    for name in ("alg-temp", "eps", "top-p"):
        ap.add_argument(f"--{name}", type=float)
    ap.add_argument("--top-k", type=int)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {k: getattr(args, k) for k in ("max_tokens", "block_length", "steps", "threshold", "temperature",
                                              "remasking", "alg", "alg_temp", "eps", "top_p", "top_k")
                 if getattr(args, k) is not None}
    if args.seed_decode is not None:
        overrides["seed"] = args.seed_decode
    model = load_model(args.model, dtype=getattr(torch, args.dtype), device=args.device)
    # The family's own parameters and defaults (LLaDA remasking / Dream alg / a block model's knobs).
    params = params_for_model(model.config, overrides, default_params(args.model))
    tokenizer = Tokenizer(args.model)
    examples = tasks.held_out_set(args.per_task, tuple(args.tasks.split(",")), seed=args.seed)
    t0 = time.time()
    scores = evaluate(reference_decoder(model, tokenizer.stop_token_ids), tokenizer, params, examples,
                      progress=True)
    rep = report(scores, params, time.time() - t0)
    rep["model"] = str(args.model)
    print_report(rep)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=2) + "\n")
    return rep


if __name__ == "__main__":
    main()
