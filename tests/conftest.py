"""Shared fixtures: tiny random models in float64 (exactness) and float32, and checkpoint writers."""

from __future__ import annotations

import pytest
import torch

from backend.models import random_model

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
