"""Shared fixtures: tiny random models in float64 (exactness) and float32, and checkpoint writers."""

from __future__ import annotations

import os

# Triton kernels run under the interpreter on CPU tensors, unless a GPU run asks for the real thing
# (benchmarks/gpu_check.sh). Must be set before anything imports a kernel module.
if os.environ.get("DLLM_KERNELS_ON_GPU") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from backend.models import random_model  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(params=["tiny-llada", "tiny-dream"])
def tiny_name(request) -> str:
    return request.param


@pytest.fixture
def tiny64(tiny_name):
    return random_model(tiny_name, dtype=torch.float64, seed=1)


def random_ids(n: int, vocab: int, gen: torch.Generator, avoid: tuple[int, ...] = ()) -> torch.Tensor:
    """Token ids in [0, vocab) without the special ids in `avoid`."""
    ids = torch.randint(0, vocab - len(avoid) - 1, (n,), generator=gen)
    for a in sorted(avoid):
        ids = torch.where(ids >= a, ids + 1, ids)
    return ids
