"""Tokens of this tree's engine against another commit's, case by case (a refactor must change none).

    python scripts/token_identity.py --against <commit>     # run both trees, compare, exit 1 on a difference
    python scripts/token_identity.py --out tokens.json      # this tree's tokens only (what --against runs)

`--against` checks the commit out in a temporary git worktree and runs this script there with that
tree first on sys.path (the same interpreter and packages). Cases: the bundled model and random tiny
LLaDA / Dream models, each policy (phase, fcfs, static), and under phase dense and sparse_retention
0.5, steps and threshold decoding, temperature sampling, a pool small enough to preempt, float32 and float64 on the
CPU; requests arrive staggered, so phases mix within iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLINGS = {
    "steps": {"max_tokens": 24, "block_length": 8, "steps": 24},
    "threshold": {"max_tokens": 24, "block_length": 8, "threshold": 0.7},
    "temperature": {"max_tokens": 16, "block_length": 8, "temperature": 0.8, "seed": 5},
    "sparse": {"max_tokens": 24, "block_length": 8, "sparse_retention": 0.5},
}


def cases():
    for model in ("bundled", "tiny-llada", "tiny-dream"):
        for dtype in ("float32", "float64"):
            for policy in ("fcfs", "static"):
                yield model, dtype, policy, "steps", False
            for sampling in SAMPLINGS:
                yield model, dtype, "phase", sampling, False
            yield model, dtype, "phase", "steps", True  # a pool that preempts


def run_case(model: str, dtype: str, policy: str, sampling: str, tight: bool) -> list[list[int]]:
    import importlib

    import torch

    try:
        from backend.engine import Engine, EngineConfig  # the public names (since backend/engine/)
    except ImportError:  # the flat layout before: backend/engine.py and backend/engine_config.py
        Engine = importlib.import_module("backend.engine").Engine
        EngineConfig = importlib.import_module("backend" + ".engine_config").EngineConfig

    torch.manual_seed(0)
    settings = {"device": "cpu", "dtype": dtype, "scheduler": policy, "max_num_batched_tokens": 256,
                "max_num_seqs": 6, "sparse_min_cached": 16, "seed": 1}
    if model != "bundled":
        settings["model"] = model
    settings["kv_cache_bytes"] = 8 << 20
    engine = Engine.from_config(EngineConfig(**settings))
    if tight:  # 128 positions: two of these requests at a time, so admissions preempt
        settings["kv_cache_bytes"] = 128 * engine.scheduler.kv_bytes_per_position
        engine = Engine.from_config(EngineConfig(**settings))
    vocab = engine.model_config.vocab_size
    mask = engine.model_config.mask_token_id
    rng = __import__("random").Random(7)
    prompts = [[t if t != mask else 1 for t in (rng.randrange(1, vocab) for _ in range(n))] for n in (5, 19, 11, 33, 8)]
    params = engine.make_params(dict(SAMPLINGS[sampling], ignore_eos=True))
    ids, got = [], {}
    pending = list(prompts)
    while pending or engine.has_unfinished():
        if pending:
            ids.append(engine.add_request(pending.pop(0), params))
        for out in engine.step():
            got.setdefault(out.request_id, []).extend(out.new_token_ids)
    return [got.get(i, []) for i in ids]


def collect() -> dict[str, list[list[int]]]:
    out = {}
    for case in cases():
        out["/".join(str(c) for c in case)] = run_case(*case)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", help="a commit to compare this tree's tokens with")
    ap.add_argument("--out", help="write this tree's tokens here (JSON)")
    a = ap.parse_args(argv)
    if not a.against:
        tokens = collect()
        Path(a.out or "/dev/stdout").write_text(json.dumps(tokens))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        tree, theirs, ours = Path(tmp) / "tree", Path(tmp) / "theirs.json", Path(tmp) / "ours.json"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), a.against], check=True,
                       capture_output=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(tree)}
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--out", str(theirs)], cwd=tree, env=env,
                           check=True)
            env["PYTHONPATH"] = str(ROOT)
            subprocess.run([sys.executable, str(Path(__file__).resolve()), "--out", str(ours)], cwd=ROOT, env=env,
                           check=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        before, after = json.loads(theirs.read_text()), json.loads(ours.read_text())
    differ = [k for k in before if before[k] != after.get(k)]
    tokens = sum(len(t) for v in before.values() for t in v)
    print(f"{len(before)} cases, {tokens} tokens: {len(differ)} cases differ" + "".join(f"\n  {k}" for k in differ))
    return 1 if differ or before.keys() != after.keys() else 0


if __name__ == "__main__":
    sys.exit(main())
