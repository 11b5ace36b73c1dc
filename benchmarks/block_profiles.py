"""Benchmark profiles of the block-diffusion models (SDAR, Fast-dLLM v2: issue 26), merged into
`benchmarks.profiles.PROFILES`. `block-cpu` runs the bundled block-diffusion model on task prompts
(accuracy checked); `--model` switches the family or size (`tiny-fast-dllm`, `sdar-8b`,
`fast-dllm-1.5b`: random weights, speed only) with the same workloads.

    python -m benchmarks.engine --profile block-cpu --out benchmarks/results
    python -m benchmarks.engine --profile block-gpu --out results/      # sdar-1.7b, bf16
"""

from __future__ import annotations

from backend.engine.config import REPO_ROOT, MiB

BUNDLED_BLOCK_MODEL = str(REPO_ROOT / "model_repository" / "dllm-sdar" / "1" / "default-model")


def block_profiles(schedulers: list[dict], gpu_mix: list[dict]) -> dict[str, dict]:
    """The block-diffusion profiles, with `profiles.py`'s scheduler variants and GPU mix (passed in, so
    the two files share one definition without importing each other)."""
    return {
        # `make bench`'s second part: the bundled block-diffusion model (SDAR architecture, trained on
        # the tasks) on 2 CPU cores, its official decoding (low_confidence_dynamic, the checkpoint's
        # block of 8), task prompts with their answers checked: bursts, long key-value prompts arriving
        # among decoding requests (prefilled in chunks beside their steps), and a rate sweep, per scheduler.
        "block-cpu": {
            "model": BUNDLED_BLOCK_MODEL,
            "engine": {"dtype": "float32", "kv_cache_bytes": 64 * MiB, "max_num_batched_tokens": 1024,
                       "max_num_seqs": 64},
            "prompts": "tasks",
            "gen_multiple": 8,
            "variants": [*schedulers, {"name": "budget-128", "engine": {"max_num_batched_tokens": 128}},
                         {"name": "static-remasking", "sampling": {"remasking": "low_confidence_static"}}],
            "scenarios": [
                {"workload": {"name": "burst", "arrival": "burst", "n": 64,
                              "classes": [{"kind": "short", "prompt": [8, 40], "gen": [32, 32]}]}},
                {"workload": {"name": "mixed", "arrival": "poisson", "rate": 8.0, "n": 64,
                              "classes": [{"kind": "short", "weight": 0.7, "prompt": [8, 40], "gen": [16, 48]},
                                          {"kind": "long", "weight": 0.3, "prompt": [100, 300], "gen": [16, 48]}]}},
                {"workload": {"name": "poisson", "arrival": "poisson", "n": 64,
                              "classes": [{"kind": "short", "prompt": [8, 40], "gen": [32, 32]}]},
                 "rates": [8.0, 32.0, 128.0], "variants": ["fcfs", "phase", "static"]},
            ],
            "cdf": "mixed",
        },
        # The same workloads on random weights of either family (speed only): --model tiny-sdar / tiny-fast-dllm.
        # The GPU run the issue asks for: SDAR-1.7B's shape (or --model sdar-8b), bursts N = 1 / 16 / 64 of
        # prompt 256 + gen 256 (block 4, 4 denoising steps: one token per step) and the mixed workload.
        "block-gpu": {
            "model": "sdar-1.7b",
            "engine": {"dtype": "bfloat16", "max_num_batched_tokens": 16384, "max_num_seqs": 128},
            "prompts": "synthetic",
            "gen_multiple": 4,
            "max_seconds": 300,
            "iteration_log": True,
            "sampling": {"ignore_eos": True, "remasking": "low_confidence_static"},
            "variants": schedulers,
            "scenarios": [
                {"workload": {"name": f"burst-{n}", "arrival": "burst", "n": n,
                              "classes": [{"prompt": [256, 256], "gen": [256, 256]}]},
                 "variants": ["phase"] if n == 1 else ["fcfs", "phase", "static"]} for n in (1, 16, 64)
            ] + [{"workload": {"name": "mixed", "arrival": "poisson", "rate": 1.0, "n": 48, "classes": gpu_mix},
                  "variants": ["fcfs", "phase", "static"]}],
            "cdf": "mixed",
        },
    }
