"""What the engine sets up on its device before serving: CUDA graphs of the Reuse forward, and the
cost model (calibrated from timed forwards on CUDA, fixed defaults elsewhere)."""

from __future__ import annotations

from backend.engine.config import EngineConfig
from backend.engine.kv.pool import KVPool
from backend.engine.scheduling.cost_model import CostModel, calibrate, calibration_sizes
from backend.models import DiffusionLM


def capture_graphs(model: DiffusionLM, pool: KVPool, config: EngineConfig):
    """Captured Reuse forwards (CUDA with the kernels); None means every step runs eagerly."""
    from backend.engine.runner.cuda_graphs import ReuseGraphs

    graphs = ReuseGraphs.for_engine(model, pool, config)
    return graphs if graphs.capture() else None


def cost_model_for(model: DiffusionLM, config: EngineConfig, graphs) -> CostModel:
    """`cost_model`: "fixed" (the documented defaults), "calibrate", or "auto" (calibrate on CUDA)."""
    mode, cap = config.cost_model, config.max_num_batched_tokens
    if mode == "fixed" or (mode == "auto" and model.device.type != "cuda") or cap < 8:
        return CostModel()  # (a budget under 8 tokens leaves no compute line to fit)
    from backend.engine.runner.memory_profile import forward_timer

    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    # Eager forwards give the floor and the compute line; a replay of the smallest captured Reuse
    # graph gives the floor of the Reuse steps that replay (no launches: a third of it at N=1).
    graph_time = (lambda: graphs.time_replay(graphs.buckets[0])) if graphs is not None else None
    return calibrate(forward_timer(model, cap), weights, calibration_sizes(cap), graph_time=graph_time)
