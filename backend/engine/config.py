"""Engine settings: one dataclass, validated, loadable from JSON or Triton config parameters (strings)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from backend.engine.sampling_params import parse_bool, parse_float, parse_int, parse_retention
from backend.engine.scheduling.scheduler import SchedulerConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = str(REPO_ROOT / "model_repository" / "dllm" / "1" / "default-model")
DTYPES = ("float32", "bfloat16", "float16", "float64")
MiB = 1 << 20


@dataclass
class EngineConfig(SchedulerConfig):
    """The engine's settings: the scheduler's (max_num_batched_tokens, max_num_seqs, scheduler,
    refresh_spread, max_refresh_wait, refresh_slice, reserve_after: `SchedulerConfig`) and these."""

    model: str = DEFAULT_MODEL  # checkpoint directory, or a preset name (random weights) such as "llada-8b"
    tokenizer: str | None = None  # directory with tokenizer files; default: the checkpoint directory
    dtype: str | None = None  # default: bfloat16 on CUDA, float32 on CPU
    device: str | None = None  # default: cuda when available, else cpu
    page_size: int = 16  # K/V slots per page
    kv_cache_bytes: int | None = None  # K/V pool size; default: 256 MiB on CPU, profiled on CUDA
    gpu_memory_utilization: float = 0.90  # CUDA: fraction of device memory the engine may use in all
    logit_budget_bytes: int = 64 * MiB  # largest logit chunk of the budgeted decode head
    cost_model: str = "auto"  # "calibrate" (timed forwards at start), "fixed" (documented defaults), "auto":
    # calibrate on CUDA, fixed elsewhere
    enforce_eager: bool = False  # CUDA: never replay captured CUDA graphs (Reuse steps run eagerly too)
    cuda_kernels: bool = True  # CUDA: Triton kernels (paged attention, fused layers); False: PyTorch paths
    cuda_graph_max_seqs: int | None = None  # largest captured Reuse batch; default max_num_seqs
    seed: int = 0  # random weights for preset models
    # Head-centric sparse attention: the share of cached K/V each KV head keeps when a request does not
    # say (`sparse_retention`), the fewest cacheable positions a request needs to go sparse (shorter
    # ones stay dense: little to save), and positions next to the block that every head always keeps.
    sparse_retention: float = 1.0
    sparse_min_cached: int = 128
    sparse_window: int = 0
    default_sampling: dict = field(default_factory=dict)  # overrides the checkpoint's generation_config.json
    # Prompt text that spells a special token (`<|eos|>`, `<|mdm_mask|>`, a chat role marker) is
    # tokenized as plain text unless this is set: a client's text must not smuggle control tokens.
    # Chat models whose template is rendered on the client side need it set.
    parse_special_tokens: bool = False

    def __post_init__(self):
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"dtype: must be one of {DTYPES}, got {self.dtype!r}")
        super().__post_init__()  # the scheduler's own checks: budget, requests, policy, pacing
        for name in ("page_size", "logit_budget_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.cuda_graph_max_seqs is not None and self.cuda_graph_max_seqs < 1:
            raise ValueError(f"cuda_graph_max_seqs: must be >= 1, got {self.cuda_graph_max_seqs}")
        self.sparse_retention = parse_retention("sparse_retention", self.sparse_retention)  # a request's floor too
        for name in ("sparse_min_cached", "sparse_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.kv_cache_bytes is not None and self.kv_cache_bytes < 1:
            raise ValueError(f"kv_cache_bytes: must be >= 1, got {self.kv_cache_bytes}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization: must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.cost_model not in ("auto", "calibrate", "fixed"):
            raise ValueError(f"cost_model: must be 'auto', 'calibrate' or 'fixed', got {self.cost_model!r}")
        if not isinstance(self.default_sampling, dict):
            raise ValueError("default_sampling: expected a JSON object")

    def scheduler_config(self) -> SchedulerConfig:
        return SchedulerConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(SchedulerConfig)})

    @classmethod
    def from_dict(cls, values: dict) -> EngineConfig:
        """From JSON or Triton parameters, where every value may arrive as a string."""
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, raw in values.items():
            if key not in types:
                raise ValueError(f"{key}: unknown engine setting; known: {sorted(types)}")
            t = str(types[key])
            if raw is None or (isinstance(raw, str) and raw == "" and "None" in t):
                kwargs[key] = None
            elif t.startswith("int"):
                kwargs[key] = parse_int(key, raw)
            elif t.startswith("float"):
                kwargs[key] = parse_float(key, raw)
            elif t.startswith("bool"):
                kwargs[key] = parse_bool(key, raw)
            elif t == "dict":
                kwargs[key] = json.loads(raw) if isinstance(raw, str) else raw
            else:
                if not isinstance(raw, str):
                    raise ValueError(f"{key}: expected a string, got {raw!r}")
                kwargs[key] = raw
        return cls(**kwargs)

    @classmethod
    def from_json(cls, path: str | Path) -> EngineConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
