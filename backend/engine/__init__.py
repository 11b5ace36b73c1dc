"""The continuous-batching diffusion engine: the loop (`engine.py`: schedule, run, commit), requests
and their outputs, the denoising rules, stop checks, sampling parameters and the engine's settings.
Its parts are subpackages: `scheduling/` (which requests run, in which phase: tensor-free), `kv/`
(the paged K/V pool, the one owner of what is cached), `runner/` (prepare, forward, decode on the
device) and `attention/` (attention over the pool, sparse selection). `python -m backend.engine`
runs it in-process on a few prompts.

Public names: `Engine`, `EngineConfig`, `SamplingParams`, `AsyncEngine`.
"""

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams

__all__ = ["Engine", "EngineConfig", "SamplingParams", "AsyncEngine"]


def __getattr__(name):  # the background loop imports the engine: loaded on first use
    if name == "AsyncEngine":
        from backend.engine.async_engine import AsyncEngine

        return AsyncEngine
    raise AttributeError(name)
