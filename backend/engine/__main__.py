"""Command line: run the engine in-process on one or more prompts and print outputs and statistics.

    python -m backend.engine "12+34=" --max-tokens 32
    python -m backend.engine --model tiny-llada --prompt-ids 5,6,7 --max-tokens 16 --block-length 8
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine

SAMPLING_FLAGS = ("max_tokens", "block_length", "steps", "threshold", "temperature", "remasking", "seed",
                  "refresh_interval", "cache", "denoising_steps", "sub_block_length")  # the last two: block diffusion


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backend.engine", description=__doc__.splitlines()[0])
    ap.add_argument("prompts", nargs="*", help="prompt texts (tokenized with the checkpoint's tokenizer)")
    ap.add_argument("--prompt-ids", action="append", default=[], help="comma-separated token ids (repeatable)")
    ap.add_argument("--model", default=EngineConfig.model, help="checkpoint directory or preset name")
    ap.add_argument("--device"), ap.add_argument("--dtype")
    ap.add_argument("--scheduler", default="fcfs")
    ap.add_argument("--engine-json", help="JSON object of further EngineConfig settings")
    for flag in SAMPLING_FLAGS:
        ap.add_argument("--" + flag.replace("_", "-"))
    ap.add_argument("--ignore-eos", action="store_true")
    ap.add_argument("--chat", action="store_true", help="wrap each prompt in the checkpoint's chat template")
    args = ap.parse_args(argv)

    settings = {"model": args.model, "device": args.device, "dtype": args.dtype, "scheduler": args.scheduler}
    settings.update(json.loads(args.engine_json) if args.engine_json else {})
    try:
        engine = Engine.from_config(EngineConfig.from_dict({k: v for k, v in settings.items() if v is not None}))
        values = {k: getattr(args, k) for k in SAMPLING_FLAGS if getattr(args, k) is not None}
        if args.ignore_eos:
            values["ignore_eos"] = True
        params = engine.make_params(values)
        prompts = [[int(t) for t in s.split(",")] for s in args.prompt_ids]
        if args.prompts:
            if engine.tokenizer is None:
                raise ValueError("prompts: this model has no tokenizer; pass --prompt-ids")
            for text in args.prompts:
                if args.chat:
                    text = engine.tokenizer.apply_chat_template([{"role": "user", "content": text}])
                prompts.append(engine.tokenizer.encode(text))
        if not prompts:
            raise ValueError("prompts: give at least one prompt or --prompt-ids")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    start = time.perf_counter()
    results = engine.generate(prompts, params)
    elapsed = time.perf_counter() - start
    for res in results:
        shown = res.text if res.text is not None else res.token_ids
        print(f"[{res.request_id}] {shown!r}  (finish: {res.finish_reason}, tokens: {len(res.token_ids)}, "
              f"forwards: {res.forwards})")
    generated = sum(len(r.token_ids) for r in results)
    stats = engine.stats
    peak = (torch.cuda.max_memory_allocated() if engine.model.device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    print(f"requests: {len(results)}  generated tokens: {generated}  time: {elapsed:.2f}s  "
          f"({generated / max(elapsed, 1e-9):.1f} tok/s)")
    print(f"iterations: {stats['iterations']}  forwards: {stats['forwards']}  "
          f"tokens per forward: {stats['committed'] / max(stats['forwards'], 1):.2f}  "
          f"refresh rows: {stats['refresh_rows']}  reuse rows: {stats['reuse_rows']}  "
          f"peak memory: {peak / 2**20:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
