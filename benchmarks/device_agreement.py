"""Engine exactness and token agreement on a device (the GPU check's correctness part).

    python -m benchmarks.device_agreement --device cuda            # tiny LLaDA, tiny Dream, bundled model
    python -m benchmarks.device_agreement --device cpu --requests 4  # the dry run

Per model:
- `exact_fp32`: float32, refresh every step: requests whose tokens equal the reference decoder's (run on
  the same device). Anything but all of them fails the check (exit code 1).
- `agree_*`: default dual cache (Reuse steps through the paged attention kernel on CUDA): token
  agreement of the engine with CUDA graphs against the eager engine, against the CPU engine (the
  PyTorch reference path), and, in bf16, against the reference decoder. Measured, not asserted.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import torch

from backend.engine.config import DEFAULT_MODEL, EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams
from backend.models import random_model
from backend.models.loader import load_model
from backend.models.model_config import PRESETS
from backend.oracle.reference import generate
from benchmarks.agreement import token_agreement


def _agreement(a: list[list[int]], b: list[list[int]]) -> float:
    return round(token_agreement(a, b), 4)


def _model(name: str, device: str, dtype: str):
    """The same weights on every device: presets are drawn on the CPU, then moved."""
    if name in PRESETS:
        return random_model(name, torch.float32, "cpu", seed=0).to(device=device, dtype=getattr(torch, dtype))
    return load_model(Path(name), getattr(torch, dtype), device)


def _tokens(model: str, device: str, dtype: str, prompts, params, **engine) -> tuple[list[list[int]], Engine]:
    eng = Engine(_model(model, device, dtype), EngineConfig(kv_cache_bytes=64 << 20, max_num_seqs=16, **engine))
    return [r.token_ids for r in eng.generate(prompts, params)], eng


def check_model(model: str, device: str, n: int, seed: int = 0) -> dict:
    rng = random.Random(seed)
    cfg = _model(model, "cpu", "float32").config
    vocab = [t for t in range(min(cfg.vocab_size, 40)) if t != cfg.mask_token_id and t not in cfg.stop_token_ids]
    prompts = [[rng.choice(vocab) for _ in range(rng.randint(4, 40))] for _ in range(n)]
    exact_params = SamplingParams(max_tokens=32, block_length=8, refresh_interval=1, ignore_eos=True)
    cached = SamplingParams(max_tokens=64, block_length=16, ignore_eos=True)
    out = {"model": model.split("/")[-1], "device": device, "requests": n}

    got, eng = _tokens(model, device, "float32", prompts, exact_params)
    ref = [generate(eng.model, p, exact_params).tokens for p in prompts]
    out["exact_fp32"] = sum(a == b for a, b in zip(got, ref, strict=True))
    out["graphs"] = eng.runner.graphs is not None

    fast, _ = _tokens(model, device, "float32", prompts, cached)
    eager, _ = _tokens(model, device, "float32", prompts, cached, enforce_eager=True)
    cpu, _ = _tokens(model, "cpu", "float32", prompts, cached)
    out["agree_fp32_graphs_vs_eager"] = _agreement(fast, eager)
    out["agree_fp32_device_vs_cpu"] = _agreement(fast, cpu)
    if device != "cpu":
        bf, eng = _tokens(model, device, "bfloat16", prompts, cached)
        bf_eager, _ = _tokens(model, device, "bfloat16", prompts, cached, enforce_eager=True)
        ref = [generate(eng.model, p, cached).tokens for p in prompts]
        out["agree_bf16_graphs_vs_eager"] = _agreement(bf, bf_eager)
        out["agree_bf16_vs_reference"] = _agreement(bf, ref)
        out["agree_bf16_vs_fp32_cpu"] = _agreement(bf, cpu)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.device_agreement", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default=f"tiny-llada,tiny-dream,{DEFAULT_MODEL}")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = []
    with torch.inference_mode():
        for m in args.models.split(","):
            rows.append(check_model(m, args.device, args.requests))
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)
    bad = [r["model"] for r in rows if r["exact_fp32"] != r["requests"]]
    if bad:
        print(f"FAIL: float32 with refresh every step differs from the reference decoder on {bad}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
