"""One benchmark run: a workload on an engine configuration, measured (records, engine counters,
memory, GPU utilization). The model is loaded once; every variant gets a fresh engine around it."""

from __future__ import annotations

import gc
import time
from collections import deque

import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.runner.decode_head import rows_per_chunk
from benchmarks.driver import IterationProbe, Prepared, replay
from benchmarks.metrics import iteration_columns, iteration_stats, summarize
from benchmarks.monitor import ResourceMonitor
from benchmarks.workloads import Workload

# Settings that decide which model is loaded: identical across the variants of one run.
MODEL_KEYS = ("model", "tokenizer", "dtype", "device", "seed")


def variant_config(profile: dict, variant: dict) -> EngineConfig:
    settings = {"model": profile["model"], **profile.get("engine", {}), **variant.get("engine", {})}
    base = {"model": profile["model"], **profile.get("engine", {})}
    if changed := [k for k in MODEL_KEYS if settings.get(k) != base.get(k)]:
        raise ValueError(f"variants: {variant['name']!r} changes {changed}; variants share one model")
    return EngineConfig.from_dict(settings)


class EngineFactory:
    """Builds the first engine with `Engine.from_config` (model, tokenizer, generation defaults, K/V
    sizing) and the others around the same model, freeing the previous engine's K/V pool first."""

    def __init__(self, first: EngineConfig):
        self.engine = Engine.from_config(first)
        self.model, self.tokenizer = self.engine.model, self.engine.tokenizer
        self.defaults = dict(self.engine.default_params)
        self._fresh = True

    def build(self, cfg: EngineConfig) -> Engine:
        if self._fresh:
            self._fresh = False
            return self.engine
        self.engine = None
        gc.collect()
        kv = cfg.kv_cache_bytes
        if kv is None and self.model.device.type == "cuda":
            from backend.engine.runner.memory_profile import kv_budget_after_profiling

            torch.cuda.empty_cache()
            kv = kv_budget_after_profiling(self.model, cfg)
        self.engine = Engine(self.model, cfg, self.tokenizer, self.defaults, kv)
        return self.engine


def prompt_ids(item, tokenizer, source) -> list[int]:
    if item.prompt_ids is not None:
        return list(item.prompt_ids)
    if item.text is not None:
        if tokenizer is None:
            raise ValueError("prompts: text prompts need a model with a tokenizer (use synthetic prompts)")
        return tokenizer.encode(item.text)
    return source.ids(item.prompt_len, item.prompt_seed)


def prepare(engine: Engine, workload: Workload, ids: list[list[int]], profile: dict, variant: dict,
            scenario: dict | None = None) -> list[Prepared]:
    """Validated parameters per request: profile's base, the item's length, the scenario's, the variant's."""
    out = []
    for item, p in zip(workload.items, ids, strict=True):
        values = {**profile.get("sampling", {}), "max_tokens": item.max_tokens, **(scenario or {}).get("sampling", {}),
                  **variant.get("sampling", {})}
        # Ignoring EOS makes exact-match scoring meaningless (the text runs on past the answer).
        answer = None if values.get("ignore_eos") else item.answer
        out.append(Prepared(item.arrival, p, engine.make_params(values), item.kind, answer))
    return out


def warm_up(engine: Engine, requests: list[Prepared]) -> None:
    """One short request first, so lazy initialization (CUDA context, kernels, allocator) is not timed."""
    if requests:
        first = requests[0]
        engine.generate([first.prompt_ids], engine.make_params({**first.params.to_dict(),
                                                                "max_tokens": first.params.block_length,
                                                                "steps": None, "threshold": None}))


def run_one(engine: Engine, requests: list[Prepared], concurrency: int | None, progress_label: str,
            max_seconds: float | None = None, keep_iterations: bool = False) -> dict:
    """`keep_iterations`: also return every iteration's record as columns (`iterations`), the data
    `benchmarks.fit_device` fits a device model to."""
    before = dict(engine.stats)
    preempt0 = engine.scheduler.num_preemptions
    # Every iteration of this run: the engine's own log keeps only the latest 4,096.
    engine_log, engine.iteration_log = engine.iteration_log, deque()
    probe = IterationProbe(engine)
    decode = engine.tokenizer.decode if engine.tokenizer is not None else None
    last = [0.0]

    def progress(done: int, total: int, now: float) -> None:
        if now - last[0] >= 2.0 or done == total:
            last[0] = now
            print(f"    {progress_label}: {done}/{total} done, {now:.1f}s", flush=True)

    try:
        with ResourceMonitor(engine.model.device) as mon:
            records, wall = replay(engine, requests, concurrency, decode, progress, max_seconds)
    finally:
        probe.detach()
        iterations, engine.iteration_log = list(engine.iteration_log), engine_log
    stats = {k: engine.stats[k] - before[k] for k in before}
    pool = engine.pool
    page_bytes = pool.bytes_per_page
    held = list(probe.pages_by_request.values())
    sampling = any(r.params.temperature > 0 for r in requests)
    logit_rows = min(probe.max_decode_rows, rows_per_chunk(engine.model_config.vocab_size, engine.model.dtype,
                                                           sampling, engine.config.logit_budget_bytes))
    width = 8 if sampling or engine.model.dtype == torch.float64 else 4
    eng = {
        "iterations": stats["iterations"],
        "forwards": stats["forwards"],
        "tokens_per_forward": round(stats["committed"] / stats["forwards"], 3) if stats["forwards"] else None,
        "refresh_steps": probe.refresh,
        "reuse_steps": probe.reuse,
        "refresh_rows": stats["refresh_rows"],
        "reuse_rows": stats["reuse_rows"],
        "mean_batch": round(sum(probe.batch_sizes) / len(probe.batch_sizes), 2) if probe.batch_sizes else 0,
        "max_batch": max(probe.batch_sizes, default=0),
        "preemptions": engine.scheduler.num_preemptions - preempt0,
        "model_busy_pct": round(100 * probe.model_seconds / wall, 1) if wall > 0 else None,
        "kv_pool_mib": round(pool.nbytes / 2**20, 2),
        "kv_peak_used_mib": round(probe.max_kv_pages * page_bytes / 2**20, 2),
        "kv_mib_per_request": round(sum(held) / len(held) * page_bytes / 2**20, 3) if held else 0.0,
        "peak_running": probe.peak_running,
        "logit_peak_mib": round(logit_rows * engine.model_config.vocab_size * width / 2**20, 3),
        "wall_s": round(wall, 3),
        **iteration_stats(iterations),
        "cost_model": engine.cost.to_dict(),
    }
    out = {"summary": summarize(records), "engine": eng, "memory": mon.result(),
           "requests": [r.to_json() for r in records]}
    if keep_iterations:
        out["iterations"] = iteration_columns(iterations)
    return out


def clock() -> str:
    return time.strftime("%H:%M:%S")
