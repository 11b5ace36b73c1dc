"""Named benchmark profiles: which model, which engine configurations to compare, which workloads.

A profile is plain data (a JSON file works too: `--profile my.json`):
- `model`, `engine`: the EngineConfig settings every variant shares (model, dtype, device, budgets);
- `prompts`: `tasks` (the bundled model's task prompts, answers scored) or `synthetic` (token ids);
- `sampling`: per-request parameters every request gets (the workload sets `max_tokens`);
- `variants`: the configurations compared, each with engine and/or sampling overrides; the first
  one is the baseline that ratios are computed against;
- `scenarios`: workloads (see `benchmarks.workloads`), each run on the listed variants (default all),
  either open loop, swept over Poisson `rates`, or closed loop at a fixed `concurrency`;
- `cdf`: the workload whose latency CDF is plotted;
- `max_seconds`: a run still going after this long has its remaining requests aborted (errors);
- `iteration_log`: keep every engine iteration (time, prediction, tokens, K/V read, graphed) in the
  JSON, for `benchmarks.fit_device`.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from backend.engine.config import DEFAULT_MODEL, MiB
from benchmarks.block_profiles import block_profiles

# Variants shared by every size: the scheduling policies (`fcfs` first: ratios are against it).
SCHEDULER_VARIANTS = [
    {"name": "fcfs", "engine": {"scheduler": "fcfs"}},  # continuous batching, token budget, arrival order
    {"name": "phase", "engine": {"scheduler": "phase"}},  # phase-multiplexed (the engine's default)
    {"name": "static", "engine": {"scheduler": "static"}},  # fixed batches, the research-loop baseline
]
SCHEDULERS = [v["name"] for v in SCHEDULER_VARIANTS]

# LiveBench-like at real size: 70% short chats, 30% long-context prompts.
GPU_MIX = [{"kind": "short", "weight": 0.7, "prompt": [64, 256], "gen": [64, 256]},
           {"kind": "long", "weight": 0.3, "prompt": [1024, 2048], "gen": [128, 512]}]
CPU_MAIN = ["fcfs", "phase", "static", "budget-512", "no-cache", "refresh-4", "threshold-0.9"]

PROFILES: dict[str, dict] = {
    # Seconds on a laptop core: what the unit test and the GPU runbook's dry run use.
    "tiny": {
        "model": "tiny-llada",
        "engine": {"dtype": "float32", "kv_cache_bytes": 4 * MiB, "max_num_batched_tokens": 1024},
        "prompts": "synthetic",
        "gen_multiple": 8,
        "iteration_log": True,  # as the gpu profile (the runbook's dry run uses this one)
        "sampling": {"block_length": 8, "ignore_eos": True},
        "variants": [*SCHEDULER_VARIANTS,
                     {"name": "budget-256", "engine": {"max_num_batched_tokens": 256}},
                     {"name": "no-cache", "sampling": {"cache": "none"}}],
        "scenarios": [
            {"workload": {"name": "burst", "arrival": "burst", "n": 6,
                          "classes": [{"prompt": [8, 24], "gen": [16, 16]}]}},
            {"workload": {"name": "poisson", "arrival": "poisson", "n": 6,
                          "classes": [{"prompt": [8, 24], "gen": [16, 16]}]},
             "rates": [20.0, 80.0], "variants": SCHEDULERS},
        ],
        "cdf": "burst",
    },
    # `make bench`: the bundled model on a CPU, under 10 minutes on 2 cores.
    "cpu": {
        "model": DEFAULT_MODEL,
        "engine": {"dtype": "float32", "max_num_batched_tokens": 4096, "max_num_seqs": 64, "cost_model": "calibrate"},
        "prompts": "tasks",
        "gen_multiple": 16,
        "sampling": {"block_length": 16},
        "variants": [*SCHEDULER_VARIANTS,
                     {"name": "budget-512", "engine": {"max_num_batched_tokens": 512}},
                     {"name": "no-cache", "sampling": {"cache": "none"}},
                     {"name": "refresh-4", "sampling": {"refresh_interval": 4}},
                     {"name": "threshold-0.9", "sampling": {"threshold": 0.9}},
                     # Long context under memory pressure: a 64 MiB K/V pool, dense vs half of it per head.
                     {"name": "dense-64MiB", "engine": {"kv_cache_bytes": 64 * MiB}},
                     {"name": "sparse-0.5-64MiB", "engine": {"kv_cache_bytes": 64 * MiB},
                      "sampling": {"sparse_retention": 0.5}}],
        "scenarios": [
            {"workload": {"name": "burst", "arrival": "burst", "n": 64,
                          "classes": [{"kind": "short", "prompt": [8, 40], "gen": [32, 32]}]},
             "variants": CPU_MAIN},
            {"workload": {"name": "mixed", "arrival": "poisson", "rate": 8.0, "n": 64,
                          "classes": [{"kind": "short", "weight": 0.7, "prompt": [8, 40], "gen": [16, 48]},
                                      {"kind": "long", "weight": 0.3, "prompt": [100, 300], "gen": [16, 48]}]},
             "variants": CPU_MAIN},
            # The longest key-value prompts (the task the kept positions decide), all at once.
            {"workload": {"name": "longctx", "arrival": "burst", "n": 64,
                          "classes": [{"kind": "long", "prompt": [280, 300], "gen": [32, 32]}]},
             "variants": ["dense-64MiB", "sparse-0.5-64MiB"]},
            # Long outputs from short prompts (the model's context is 512): many block boundaries each.
            {"workload": {"name": "longout", "arrival": "poisson", "rate": 4.0, "n": 24,
                          "classes": [{"kind": "short", "prompt": [8, 40], "gen": [256, 448]}]},
             "sampling": {"ignore_eos": True}, "variants": SCHEDULERS},
            {"workload": {"name": "poisson", "arrival": "poisson", "n": 64,
                          "classes": [{"kind": "short", "prompt": [8, 40], "gen": [32, 32]}]},
             "rates": [2.0, 8.0, 32.0, 128.0], "variants": SCHEDULERS},
            {"workload": {"name": "closed-c4", "arrival": "burst", "n": 32,
                          "classes": [{"kind": "short", "prompt": [8, 40], "gen": [32, 32]}]},
             "concurrency": 4, "variants": ["fcfs"]},
        ],
        "cdf": "mixed",
    },
    # The GPU runbook: LLaDA-8B's shape with random weights in bf16 (ANCHORS: prompt 256 + gen 256,
    # one token per step, block 32).
    "gpu": {
        "model": "llada-8b",
        "engine": {"dtype": "bfloat16", "max_num_batched_tokens": 16384, "max_num_seqs": 128},
        "prompts": "synthetic",
        "gen_multiple": 32,
        "max_seconds": 300,
        "iteration_log": True,  # a GPU run's iterations are the data the cost and schedule models are fitted to
        "sampling": {"block_length": 32, "ignore_eos": True},
        # Run order = this order (a run cut short keeps what came first): the baselines' heavy static
        # runs come after the new techniques.
        "variants": [SCHEDULER_VARIANTS[0], SCHEDULER_VARIANTS[1],
                     {"name": "sparse-0.5", "sampling": {"sparse_retention": 0.5}},
                     SCHEDULER_VARIANTS[2],
                     # The pacing's slack: on the H200 model 0.5 evens bursts out (max / median 1.00)
                     # and cuts TTFD near saturation by a third for 10% more ITL p99; on the CPU it
                     # raised poisson@32's p95 by a third.
                     {"name": "phase-spread-0.5", "engine": {"scheduler": "phase", "refresh_spread": 0.5}},
                     {"name": "budget-4k", "engine": {"max_num_batched_tokens": 4096}},
                     {"name": "no-cache", "sampling": {"cache": "none"}},
                     {"name": "refresh-8", "sampling": {"refresh_interval": 8}},
                     # Several tokens per step (issue 25): steps = generation / 2 and / 4 (the bursts' 256)
                     {"name": "steps-128", "sampling": {"steps": 128}},
                     {"name": "steps-64", "sampling": {"steps": 64}}],
        "scenarios": [
            {"workload": {"name": "burst-1", "arrival": "burst", "n": 1,
                          "classes": [{"prompt": [256, 256], "gen": [256, 256]}]},
             "variants": ["fcfs", "steps-128", "steps-64"]},
            {"workload": {"name": "burst-16", "arrival": "burst", "n": 16,
                          "classes": [{"prompt": [256, 256], "gen": [256, 256]}]},
             "variants": ["fcfs", "phase", "static", "budget-4k", "no-cache", "refresh-8"]},
            # Long context at batch 64: the K/V the sparse heads do not keep is neither stored nor read.
            {"workload": {"name": "longctx-64", "arrival": "burst", "n": 64,
                          "classes": [{"prompt": [1800, 1800], "gen": [256, 256]}]},
             "variants": ["phase", "sparse-0.5"]},
            # Long outputs from short prompts, Poisson arrivals.
            {"workload": {"name": "longout", "arrival": "poisson", "rate": 0.5, "n": 24,
                          "classes": [{"prompt": [64, 256], "gen": [512, 1024]}]}, "variants": SCHEDULERS},
            {"workload": {"name": "burst-64", "arrival": "burst", "n": 64,
                          "classes": [{"prompt": [256, 256], "gen": [256, 256]}]},
             "variants": [*SCHEDULERS, "phase-spread-0.5", "steps-128", "steps-64"]},
            {"workload": {"name": "mixed", "arrival": "poisson", "rate": 1.0, "n": 48,
                          "classes": GPU_MIX},
             "variants": ["fcfs", "phase", "static", "budget-4k"]},
            # The same mix just below static's saturation (between 2.25 and 2.5 requests/s on the H200
            # model of benchmarks.schedule_sim, with its attention-over-cache term): issue 14's latency goals.
            {"workload": {"name": "mixed-sat", "arrival": "poisson", "rate": 2.25, "n": 150,
                          "classes": GPU_MIX},
             "variants": [*SCHEDULERS, "phase-spread-0.5"]},
            {"workload": {"name": "poisson", "arrival": "poisson", "n": 32,
                          "classes": [{"prompt": [256, 256], "gen": [256, 256]}]},
             "rates": [0.5, 1.0, 2.0, 4.0], "variants": SCHEDULERS},
        ],
        "cdf": "mixed",
    },
}


# The block-diffusion models' profiles (issue 26) live beside these.
PROFILES.update(block_profiles(SCHEDULER_VARIANTS, GPU_MIX))


def load_profile(name_or_path: str) -> dict:
    if name_or_path in PROFILES:
        return copy.deepcopy(PROFILES[name_or_path]) | {"name": name_or_path}
    path = Path(name_or_path)
    if not path.is_file():
        raise ValueError(f"profile: {name_or_path!r} is neither a known profile {sorted(PROFILES)} nor a JSON file")
    return json.loads(path.read_text()) | {"name": path.stem}


def select(profile: dict, variants: list[str] | None = None, scenarios: list[str] | None = None) -> dict:
    """Keep only the named variants and scenarios (the first kept variant becomes the baseline)."""
    if variants:
        known = {v["name"] for v in profile["variants"]}
        if unknown := set(variants) - known:
            raise ValueError(f"variants: unknown {sorted(unknown)}; known: {sorted(known)}")
        profile["variants"] = [v for v in profile["variants"] if v["name"] in variants]
    if scenarios:
        known = {s["workload"]["name"] for s in profile["scenarios"]}
        if unknown := set(scenarios) - known:
            raise ValueError(f"scenarios: unknown {sorted(unknown)}; known: {sorted(known)}")
        profile["scenarios"] = [s for s in profile["scenarios"] if s["workload"]["name"] in scenarios]
    return profile
