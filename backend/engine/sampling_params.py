"""Per-request decoding parameters: one validated dataclass shared by the reference decoder, the
engine and the Triton adapter (which receives them as JSON whose values may be strings)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from backend.engine.param_parsing import (
    MAX_INT32,
    MAX_INT64,
    parse_bool,
    parse_float,
    parse_int,
    parse_neutral_only,
    parse_stop,
    parse_str,
    show,
)

__all__ = ["SamplingParams", "largest_block", "parse_bool", "parse_float", "parse_int", "parse_retention", "parse_stop"]

REMASKING = ("low_confidence", "random")  # LLaDA's `remasking`
DREAM_ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")  # Dream's `alg`
# Each family's official defaults for the settings only it has (LLaDA's generate: remasking
# low_confidence; Dream's DreamGenerationConfig: alg origin, eps 1e-3, alg_temp None).
FAMILY_DEFAULTS = {"llada": {"remasking": "low_confidence"}, "dream": {"alg": "origin", "eps": 1e-3}}
FAMILY_NAMES = {"llada": "LLaDA", "dream": "Dream"}
FAMILY_ONLY = {"remasking": "llada", "alg": "dream", "alg_temp": "dream", "eps": "dream"}
CACHE_MODES = ("none", "dual")
DEFAULT_MAX_BLOCK = 32
# Bounds that keep a request's cost on the engine thread proportional to what it asks for: stop
# strings are searched in the committed text at every step.
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_LOGPROBS = 20  # vLLM's default `max_logprobs`: alternatives a request may ask for per token
# Gumbel noise is scaled by the temperature: far above this every choice is already uniform, and
# near the float64 limit the scaled noise overflows (a [MASK] logit of -inf would become NaN).
MAX_TEMPERATURE = 100.0
# The smallest share of cached K/V a sparse head may keep. Each head keeps at least one page's worth of
# positions anyway (Request.cached_slots: a page is allocated whole, so fewer slots would save no
# memory, only accuracy), so a smaller share could only mean "one page": 1e-9 once kept one position per
# head and answered empty. Refused below this, by name, rather than read as something else.
MIN_SPARSE_RETENTION = 0.01


def largest_block(max_tokens: int, cap: int = DEFAULT_MAX_BLOCK) -> int:
    """The default block length: the largest divisor of `max_tokens` that is at most `cap`."""
    return next(b for b in range(min(cap, max_tokens), 0, -1) if max_tokens % b == 0)


def _share(name: str, v) -> float:
    """A number in (0, 1]: a confidence threshold."""
    v = parse_float(name, v)
    if not 0.0 < v <= 1.0:
        raise ValueError(f"{name}: must be in (0, 1], got {show(v)}")
    return v


def _open_share(name: str, v) -> float:
    """A number in (0, 1): Dream's eps (the last timestep)."""
    v = parse_float(name, v)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name}: must be in (0, 1), got {show(v)}")
    return v


def parse_retention(name: str, v) -> float:
    """A sparse retention: a number in [MIN_SPARSE_RETENTION, 1]."""
    v = parse_float(name, v)
    if not MIN_SPARSE_RETENTION <= v <= 1.0:
        raise ValueError(f"{name}: must be in [{MIN_SPARSE_RETENTION}, 1], got {show(v)}")
    return v


_count = partial(parse_int, lo=1, hi=MAX_INT32)
# Why vLLM's penalties are refused (issue 23): they reweigh a token by the tokens generated *before*
# it, and a diffusion model commits a block's positions in parallel and out of order, so at a step
# the "tokens so far" of a position is not defined (the positions on both sides may still be masked).
_PENALTY_WHY = ("penalties over previously generated tokens have no defined order in a diffusion model, "
                "which commits positions in parallel and out of order")


@dataclass
class SamplingParams:
    max_tokens: int = 128
    block_length: int | None = None  # None: the largest divisor of max_tokens up to 32
    steps: int | None = None  # None: max_tokens (one token per step); exclusive with threshold
    threshold: float | None = None  # confidence-threshold parallel decoding (Fast-dLLM)
    temperature: float = 0.0
    remasking: str | None = None  # LLaDA only; None: the family's default (low_confidence)
    alg: str | None = None  # Dream only; None: the family's default (origin)
    alg_temp: float | None = None  # Dream only: > 0 samples the committed positions (None / 0: top-k)
    eps: float | None = None  # Dream only: the last timestep of its schedule (None: 1e-3)
    top_p: float | None = None  # nucleus filter of the sampling distribution (None / 1: off)
    top_k: int | None = None  # keep the k most likely tokens (None: off)
    seed: int = 0
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    cache: str = "dual"
    sparse_retention: float = 1.0
    refresh_interval: int | None = None  # None: refresh at each block start only
    # vLLM's keys (issue 23). min_tokens: stop tokens and stop strings cannot end the generation
    # within its first min_tokens positions. include_stop_str_in_output: the stop string stays in
    # the text. Penalties: neutral values only (see _PENALTY_WHY).
    min_tokens: int = 0
    include_stop_str_in_output: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    # vLLM's `logprobs`: None = none; k >= 0 = each committed token's log-probability and its k most
    # likely alternatives (backend/engine/runner/logprobs.py says which distribution).
    logprobs: int | None = None

    # One total parser per field (name, raw value) -> value, or a ValueError naming the field. They
    # run on every construction, so a SamplingParams holds nothing the engine cannot represent:
    # counts fit in int32, seeds in [0, 2**63), every float is finite.
    _CONVERTERS = {
        "max_tokens": _count, "block_length": _count, "steps": _count, "threshold": _share,
        "temperature": partial(parse_float, lo=0.0, hi=MAX_TEMPERATURE),
        "remasking": partial(parse_str, choices=REMASKING),
        "alg": partial(parse_str, choices=DREAM_ALGS),
        "alg_temp": partial(parse_float, lo=0.0, hi=MAX_TEMPERATURE), "eps": _open_share, "top_p": _share,
        "top_k": _count,
        "seed": partial(parse_int, lo=0, hi=MAX_INT64),
        "stop": partial(parse_stop, max_count=MAX_STOP_STRINGS, max_chars=MAX_STOP_CHARS),
        "ignore_eos": parse_bool, "cache": partial(parse_str, choices=CACHE_MODES),
        "sparse_retention": parse_retention, "refresh_interval": _count,
        "min_tokens": partial(parse_int, lo=0, hi=MAX_INT32), "include_stop_str_in_output": parse_bool,
        "presence_penalty": partial(parse_neutral_only, neutral=0.0, why=_PENALTY_WHY),
        "frequency_penalty": partial(parse_neutral_only, neutral=0.0, why=_PENALTY_WHY),
        "repetition_penalty": partial(parse_neutral_only, neutral=1.0, why=_PENALTY_WHY),
        "logprobs": partial(parse_int, lo=0, hi=MAX_LOGPROBS),
    }

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:  # None (JSON null) means "not set": the field's default
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                setattr(self, f.name, default)
            else:
                setattr(self, f.name, self._CONVERTERS[f.name](f.name, value))
        if self.block_length is None:
            self.block_length = largest_block(self.max_tokens)
        if self.block_length > self.max_tokens:
            raise ValueError(f"block_length: {self.block_length} is longer than max_tokens={self.max_tokens}")
        if self.max_tokens % self.block_length:
            raise ValueError(f"block_length: {self.block_length} does not divide max_tokens={self.max_tokens}")
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens: {self.min_tokens} exceeds max_tokens={self.max_tokens}")
        if self.threshold is not None:
            if self.steps is not None:
                raise ValueError("steps: cannot be combined with threshold (threshold decides the steps)")
            if self.remasking not in (None, "low_confidence"):
                raise ValueError("remasking: threshold decoding needs remasking='low_confidence'")
            if self.alg == "origin":
                raise ValueError("alg: threshold decoding needs a confidence (maskgit_plus, topk_margin or "
                                 "entropy); origin has none")
            if self.alg_temp:
                raise ValueError("alg_temp: threshold decoding ranks by confidence; alg_temp must be 0 or unset")
        else:
            if self.steps is None:
                self.steps = self.max_tokens
            if self.steps % self.num_blocks:
                raise ValueError(f"steps: {self.steps} is not divisible by the number of blocks "
                                 f"({self.num_blocks} = max_tokens / block_length)")
            if self.steps // self.num_blocks > self.block_length:
                raise ValueError(f"steps: {self.steps // self.num_blocks} steps per block exceed "
                                 f"block_length={self.block_length} (a step would commit nothing)")

    def for_family(self, arch: str) -> SamplingParams:
        """These parameters for a model family ("llada" or "dream"): a setting of the other family
        is refused by name, the family's own settings take their official defaults."""
        for name, family in FAMILY_ONLY.items():
            if family != arch and getattr(self, name) is not None:
                mine = sorted(k for k, f in FAMILY_ONLY.items() if f == arch)
                raise ValueError(f"{name}: a {FAMILY_NAMES[family]} setting; {FAMILY_NAMES.get(arch, arch)} models "
                                 f"take {', '.join(mine)} (and every general setting)")
        defaults = {k: v for k, v in FAMILY_DEFAULTS.get(arch, {}).items() if getattr(self, k) is None}
        if not defaults:
            return self
        if self.threshold is not None and defaults.get("alg") == "origin":
            defaults["alg"] = "maskgit_plus"  # threshold decoding needs a confidence: Dream's own
        return dataclasses.replace(self, **defaults)

    @property
    def num_blocks(self) -> int:
        return self.max_tokens // self.block_length

    @property
    def steps_per_block(self) -> int | None:
        return None if self.steps is None else self.steps // self.num_blocks

    @classmethod
    def from_dict(cls, values: dict, defaults: dict | None = None) -> SamplingParams:
        """Validated parameters from a JSON-like dict (values may be strings), on top of `defaults`
        (e.g. the model's generation config). A null value is the same as leaving the key out.
        Unknown keys and bad values raise a `ValueError` whose message starts with the offending
        field's name; nothing else is raised, whatever the values."""
        if not isinstance(values, dict):
            raise ValueError(f"sampling_parameters: expected a JSON object, got {type(values).__name__}")
        given = {}
        for key, raw in values.items():
            if key not in cls._CONVERTERS:
                plain = isinstance(key, str) and key.isascii() and key.isidentifier() and len(key) <= 64
                name = key if plain else show(key)
                raise ValueError(f"{name}: unknown sampling parameter; known: {sorted(cls._CONVERTERS)}")
            if raw is not None:
                given[key] = cls._CONVERTERS[key](key, raw)
        base = {k: v for k, v in (defaults or {}).items() if v is not None}
        for key in base:
            if key not in cls._CONVERTERS:
                raise ValueError(f"{show(key)}: unknown sampling parameter in the defaults")
        # Defaults that depend on the length or on the decoding mode yield to the request's choice. A
        # default block (the checkpoint's generation_config) stays the most a block may be: the
        # request's max_tokens gets its largest divisor up to that block, so a model keeps the block
        # it was tuned for whatever room the client asks for (issue 22).
        if "max_tokens" in given:
            if "block_length" in base and "block_length" not in given:
                base["block_length"] = largest_block(given["max_tokens"], base["block_length"])
            base.pop("steps", None)
        if "threshold" in given:
            base.pop("steps", None)
        if "steps" in given:
            base.pop("threshold", None)
        return cls(**{**base, **given})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def checkpoint_defaults(checkpoint_dir: str | Path) -> dict:
    """The decoding defaults a checkpoint ships (its generation_config.json): the keys that are
    SamplingParams fields; the rest (transformers' own settings) is not ours to read."""
    path = Path(checkpoint_dir) / "generation_config.json"
    if not path.is_file():
        return {}
    known = set(SamplingParams._CONVERTERS)
    return {k: v for k, v in json.loads(path.read_text()).items() if k in known}
