"""Measuring the model on its device: the K/V pool size left after a worst-case forward (CUDA), and
timed forwards for the cost model."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from backend.engine.runner.decode_head import rows_per_chunk
from backend.models import DiffusionLM, PackedBatch

if TYPE_CHECKING:  # only its fields are read: the runner sits below the engine's settings
    from backend.engine.config import EngineConfig


def _full_batch(model: DiffusionLM, tokens: int) -> tuple[torch.Tensor, PackedBatch]:
    """`tokens` rows as whole sequences of at most the model's context (no cache): a Refresh-like forward."""
    ctx = model.config.max_sequence_length
    lengths = [ctx] * (tokens // ctx) + ([tokens % ctx] if tokens % ctx else [])
    return torch.zeros(tokens, dtype=torch.long, device=model.device), PackedBatch.contiguous(lengths, model.device)


@torch.inference_mode()
def kv_budget_after_profiling(model: DiffusionLM, cfg: EngineConfig) -> int:
    """Bytes for the K/V pool: device memory x gpu_memory_utilization, minus the peak of a forward over
    a full token budget (activations) plus one logit chunk of the decode head."""
    device = model.device
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    tokens = cfg.max_num_batched_tokens
    hidden = model(*_full_batch(model, tokens))
    rows = min(tokens, rows_per_chunk(model.config.vocab_size, model.dtype, True, cfg.logit_budget_bytes))
    model.lm_head(hidden[:rows]).float()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del hidden
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    budget = int(total * cfg.gpu_memory_utilization) - peak
    if budget <= 0:
        raise RuntimeError(f"gpu_memory_utilization: {cfg.gpu_memory_utilization} of {total / 2**30:.1f} GiB leaves no "
                           f"room for the K/V cache after a {peak / 2**30:.1f} GiB profiling peak")
    return budget


def forward_timer(model: DiffusionLM, max_tokens: int):
    """`time(tokens) -> seconds` of one synchronised forward of `tokens` rows (sequences of at most the
    model's context, no cache), after one warm-up per size: what the cost model is calibrated with."""
    sync = torch.cuda.synchronize if model.device.type == "cuda" else (lambda: None)
    warm: set[int] = set()

    @torch.inference_mode()
    def time_forward(tokens: int) -> float:
        n = max(1, min(tokens, max_tokens))
        ids, batch = _full_batch(model, n)
        if n not in warm:  # kernel selection and the allocator, once per shape
            warm.add(n)
            model(ids, batch)
            sync()
        start = time.perf_counter()
        model(ids, batch)
        sync()
        return time.perf_counter() - start

    return time_forward
