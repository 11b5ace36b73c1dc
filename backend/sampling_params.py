"""Per-request decoding parameters: one validated dataclass shared by the reference decoder, the
engine and the Triton adapter (which receives them as JSON whose values may be strings)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

REMASKING = ("low_confidence", "random")
CACHE_MODES = ("none", "dual")
DEFAULT_MAX_BLOCK = 32


def parse_bool(name: str, v) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0"):
        return v.strip().lower() in ("true", "1")
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    raise ValueError(f"{name}: expected a boolean, got {v!r}")


def parse_int(name: str, v) -> int:
    if isinstance(v, bool):
        raise ValueError(f"{name}: expected an integer, got {v!r}")
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        try:
            return int(v.strip())
        except ValueError:
            pass
    raise ValueError(f"{name}: expected an integer, got {v!r}")


def parse_float(name: str, v) -> float:
    if isinstance(v, bool):
        raise ValueError(f"{name}: expected a number, got {v!r}")
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            pass
    raise ValueError(f"{name}: expected a number, got {v!r}")


def parse_stop(name: str, v) -> list[str]:
    if isinstance(v, str):
        try:  # a JSON list passed as a string, as Triton request parameters arrive
            parsed = json.loads(v)
            v = parsed if isinstance(parsed, list) else [v]
        except json.JSONDecodeError:
            v = [v]
    if not isinstance(v, list) or not all(isinstance(s, str) and s for s in v):
        raise ValueError(f"{name}: expected a string or a list of non-empty strings, got {v!r}")
    return list(v)


def largest_block(max_tokens: int, cap: int = DEFAULT_MAX_BLOCK) -> int:
    """The default block length: the largest divisor of `max_tokens` that is at most `cap`."""
    return next(b for b in range(min(cap, max_tokens), 0, -1) if max_tokens % b == 0)


@dataclass
class SamplingParams:
    max_tokens: int = 128
    block_length: int | None = None  # None: the largest divisor of max_tokens up to 32
    steps: int | None = None  # None: max_tokens (one token per step); exclusive with threshold
    threshold: float | None = None  # confidence-threshold parallel decoding (Fast-dLLM)
    temperature: float = 0.0
    remasking: str = "low_confidence"
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    cache: str = "dual"
    sparse_retention: float = 1.0
    refresh_interval: int | None = None  # None: refresh at each block start only

    _CONVERTERS = {
        "max_tokens": parse_int, "block_length": parse_int, "steps": parse_int, "threshold": parse_float,
        "temperature": parse_float, "remasking": None, "seed": parse_int, "stop": parse_stop, "ignore_eos": parse_bool,
        "cache": None, "sparse_retention": parse_float, "refresh_interval": parse_int,
    }

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be at least 1, got {self.max_tokens}")
        if self.block_length is None:
            self.block_length = largest_block(self.max_tokens)
        if self.block_length < 1:
            raise ValueError(f"block_length: must be at least 1, got {self.block_length}")
        if self.block_length > self.max_tokens:
            raise ValueError(f"block_length: {self.block_length} is longer than max_tokens={self.max_tokens}")
        if self.max_tokens % self.block_length:
            raise ValueError(f"block_length: {self.block_length} does not divide max_tokens={self.max_tokens}")
        if self.threshold is not None:
            if self.steps is not None:
                raise ValueError("steps: cannot be combined with threshold (threshold decides the steps)")
            if not 0.0 < self.threshold <= 1.0:
                raise ValueError(f"threshold: must be in (0, 1], got {self.threshold}")
            if self.remasking != "low_confidence":
                raise ValueError("remasking: threshold decoding needs remasking='low_confidence'")
        else:
            if self.steps is None:
                self.steps = self.max_tokens
            if self.steps < 1:
                raise ValueError(f"steps: must be at least 1, got {self.steps}")
            if self.steps % self.num_blocks:
                raise ValueError(f"steps: {self.steps} is not divisible by the number of blocks "
                                 f"({self.num_blocks} = max_tokens / block_length)")
            if self.steps // self.num_blocks > self.block_length:
                raise ValueError(f"steps: {self.steps // self.num_blocks} steps per block exceed "
                                 f"block_length={self.block_length} (a step would commit nothing)")
        if not 0.0 <= self.temperature:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if self.remasking not in REMASKING:
            raise ValueError(f"remasking: must be one of {REMASKING}, got {self.remasking!r}")
        if self.seed < 0:
            raise ValueError(f"seed: must be >= 0, got {self.seed}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache: must be one of {CACHE_MODES}, got {self.cache!r}")
        if not 0.0 < self.sparse_retention <= 1.0:
            raise ValueError(f"sparse_retention: must be in (0, 1], got {self.sparse_retention}")
        if self.refresh_interval is not None and self.refresh_interval < 1:
            raise ValueError(f"refresh_interval: must be at least 1, got {self.refresh_interval}")

    @property
    def num_blocks(self) -> int:
        return self.max_tokens // self.block_length

    @property
    def steps_per_block(self) -> int | None:
        return None if self.steps is None else self.steps // self.num_blocks

    @classmethod
    def from_dict(cls, values: dict, defaults: dict | None = None) -> SamplingParams:
        """Validated parameters from a JSON-like dict (values may be strings), on top of `defaults`
        (e.g. the model's generation config). Unknown keys and bad values raise a `ValueError`
        whose message starts with the offending field's name."""
        if not isinstance(values, dict):
            raise ValueError(f"sampling_parameters: expected a JSON object, got {type(values).__name__}")
        given = {}
        for key, raw in values.items():
            if key not in cls._CONVERTERS:
                raise ValueError(f"{key}: unknown sampling parameter; known: {sorted(cls._CONVERTERS)}")
            conv = cls._CONVERTERS[key]
            if raw is None or conv is None:
                if raw is not None and not isinstance(raw, str):
                    raise ValueError(f"{key}: expected a string, got {raw!r}")
                given[key] = raw
            else:
                given[key] = conv(key, raw)
        base = dict(defaults or {})
        # Defaults that depend on the length or on the decoding mode yield to the request's choice.
        if "max_tokens" in given:
            base.pop("block_length", None)
            base.pop("steps", None)
        if "threshold" in given:
            base.pop("steps", None)
        if "steps" in given:
            base.pop("threshold", None)
        return cls(**{**base, **given})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
