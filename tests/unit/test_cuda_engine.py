"""The engine on CUDA (skipped without a GPU; benchmarks/gpu_check.sh runs it on one): float32 with
refresh every step equals the reference decoder, and a replayed CUDA graph computes what the eager
forward computes for the same step."""

from __future__ import annotations

import pytest
import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams
from backend.models import random_model
from backend.oracle.reference import generate

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32]]


def _model(name: str) -> torch.nn.Module:
    return random_model(name, torch.float32, "cpu", seed=4).to("cuda")


def test_refresh_every_step_equals_reference_on_cuda(tiny_name):
    model = _model(tiny_name)
    sp = SamplingParams(max_tokens=24, block_length=8, refresh_interval=1, ignore_eos=True)
    results = Engine(model, EngineConfig(kv_cache_bytes=8 << 20, max_num_seqs=4)).generate(PROMPTS, sp)
    for p, res in zip(PROMPTS, results, strict=True):
        assert res.token_ids == generate(model, p, sp).tokens


def test_graph_replay_matches_eager_forward(tiny_name):
    engine = Engine(_model(tiny_name), EngineConfig(kv_cache_bytes=8 << 20, max_num_seqs=4))
    runner, graphs = engine.runner, engine.runner.graphs
    assert graphs is not None and graphs.graphs, "CUDA graphs were not captured"
    eager_forward, diffs = runner.forward, []

    def both(inputs):
        if not graphs.fits(inputs):
            return eager_forward(inputs)
        replayed = graphs.replay(inputs).clone()
        runner.graphs = None
        try:
            eager = eager_forward(inputs)
        finally:
            runner.graphs = graphs
        diffs.append(float((replayed - eager).abs().max()))
        return eager

    runner.forward = both
    engine.generate(PROMPTS, SamplingParams(max_tokens=32, block_length=16, ignore_eos=True))
    assert len(diffs) > 10 and max(diffs) < 1e-4, diffs


def test_cost_model_is_calibrated_with_the_graph_floor(tiny_name):
    """On CUDA the cost model is timed at start: eager forwards for the floor and the compute line, a
    replay of the smallest Reuse graph for the floor of replayed steps (no launches: below the eager one)."""
    engine = Engine(_model(tiny_name), EngineConfig(kv_cache_bytes=8 << 20, max_num_seqs=4))
    cost = engine.cost
    assert cost.calibrated and cost.graph_floor is not None and 0 < cost.graph_floor <= cost.floor
    engine.generate(PROMPTS, SamplingParams(max_tokens=16, block_length=8, ignore_eos=True))
    # Replayed Reuse steps are predicted from the graph floor (eager predictions never go below the floor).
    assert any(r.predicted < cost.floor for r in engine.iteration_log if not r.refresh_tokens)
    assert all(r.predicted >= cost.floor for r in engine.iteration_log if r.refresh_tokens)
