"""Benchmark profiles of the block-diffusion models (SDAR, Fast-dLLM v2: issue 26), merged into
`benchmarks.profiles.PROFILES`. Random weights (no trained block-diffusion model is bundled), so the
figures are speed only; `--model` switches the family or size (`tiny-fast-dllm`, `sdar-8b`,
`fast-dllm-1.5b`) with the same workloads.

    python -m benchmarks.engine --profile block-cpu --out benchmarks/results
    python -m benchmarks.engine --profile block-gpu --out results/      # sdar-1.7b, bf16
"""

from __future__ import annotations

from backend.engine.config import MiB

SCHEDULERS = [{"name": "fcfs", "engine": {"scheduler": "fcfs"}}, {"name": "phase", "engine": {"scheduler": "phase"}},
              {"name": "static", "engine": {"scheduler": "static"}}]
GPU_MIX = [{"kind": "short", "weight": 0.7, "prompt": [64, 256], "gen": [64, 256]},
           {"kind": "long", "weight": 0.3, "prompt": [1024, 2048], "gen": [128, 512]}]

BLOCK_PROFILES: dict[str, dict] = {
    # Seconds on 2 CPU cores: the engine path (chunked prefill beside denoising) on a tiny SDAR.
    "block-cpu": {
        "model": "tiny-sdar",
        "engine": {"dtype": "float32", "kv_cache_bytes": 16 * MiB, "max_num_batched_tokens": 1024},
        "prompts": "synthetic",
        "gen_multiple": 4,
        "sampling": {"ignore_eos": True},
        "variants": [*SCHEDULERS, {"name": "budget-128", "engine": {"max_num_batched_tokens": 128}}],
        "scenarios": [
            {"workload": {"name": "burst", "arrival": "burst", "n": 16,
                          "classes": [{"prompt": [8, 40], "gen": [32, 32]}]}},
            # Long prompts arriving among decoding requests: prefilled in chunks beside their steps.
            {"workload": {"name": "mixed", "arrival": "poisson", "rate": 20.0, "n": 24,
                          "classes": [{"kind": "short", "weight": 0.7, "prompt": [8, 40], "gen": [16, 48]},
                                      {"kind": "long", "weight": 0.3, "prompt": [300, 400], "gen": [16, 48]}]}},
        ],
        "cdf": "mixed",
    },
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
        "variants": SCHEDULERS,
        "scenarios": [
            {"workload": {"name": f"burst-{n}", "arrival": "burst", "n": n,
                          "classes": [{"prompt": [256, 256], "gen": [256, 256]}]},
             "variants": ["phase"] if n == 1 else ["fcfs", "phase", "static"]} for n in (1, 16, 64)
        ] + [{"workload": {"name": "mixed", "arrival": "poisson", "rate": 1.0, "n": 48, "classes": GPU_MIX},
              "variants": ["fcfs", "phase", "static"]}],
        "cdf": "mixed",
    },
}
