"""Decoding parameters of the block-diffusion families (SDAR, Fast-dLLM v2): `SamplingParams` with
their official knobs, validated for their geometry.

Shared with LLaDA / Dream: max_tokens, temperature, top_p, top_k, seed, stop, ignore_eos, min_tokens,
include_stop_str_in_output, the neutral-only penalties. Their own, with the official defaults:

- block_length: the decoding block (default: the checkpoint's block_size / bd_size). Blocks are
  aligned to absolute positions (block i holds positions [i*B, (i+1)*B)), as the official loops lay
  them out, so a prompt's last partial block is completed by the first generated tokens; max_tokens
  need not be a multiple of it (the official loops decode whole blocks; the tokens past max_tokens are
  decoded with their block and not returned).
- SDAR (`block_diffusion_generate`): remasking = low_confidence_dynamic (default) | low_confidence_static
  | sequential; denoising_steps per block (default: block_length, one token per step, the official
  CLI's 4 / 4); threshold = its confidence_threshold (0.85), read by low_confidence_dynamic only.
- Fast-dLLM v2 (`batch_sample`): threshold (default 0.9, the model card's example; the function's own
  default is 0.95); sub_block_length = its small_block_size (default 8, or the largest divisor of
  block_length up to 8).

The cache is the exact block cache (`cache: "block"`, the only mode); sparse retention would drop K/V
that is exact and read at every later step, so it is refused rather than approximated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

from backend.engine.param_parsing import MAX_INT32, parse_int, parse_str
from backend.engine.sampling_params import FAMILY_NAMES, SamplingParams, largest_block

SDAR_REMASKING = ("low_confidence_dynamic", "low_confidence_static", "sequential")
SDAR_THRESHOLD = 0.85
FAST_DLLM_THRESHOLD = 0.9
FAST_DLLM_SUB_BLOCK = 8
_count = partial(parse_int, lo=1, hi=MAX_INT32)
NAMES = {**FAMILY_NAMES, "sdar": "SDAR", "fast_dllm": "Fast-dLLM v2"}


@dataclass
class BlockSamplingParams(SamplingParams):
    """The base of the two families' parameters; `family` names the one."""

    family: ClassVar[str] = ""
    # The settings of LLaDA / Dream this family does not take, with what it takes instead.
    NOT_HERE: ClassVar[dict[str, str]] = {}
    cache: str = "block"
    denoising_steps: int | None = None  # SDAR: steps per block
    sub_block_length: int | None = None  # Fast-dLLM v2: small_block_size

    _CONVERTERS = {**SamplingParams._CONVERTERS, "denoising_steps": _count, "sub_block_length": _count,
                   "remasking": partial(parse_str, choices=SDAR_REMASKING),
                   "cache": partial(parse_str, choices=("block",))}

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
                setattr(self, f.name, default)
            else:
                setattr(self, f.name, self._CONVERTERS[f.name](f.name, value))
        for name, instead in self.NOT_HERE.items():
            if getattr(self, name) is not None:
                raise ValueError(f"{name}: not a {NAMES[self.family]} setting; {instead}")
        if self.logprobs is not None:
            raise ValueError("logprobs: not computed for block-diffusion models yet (nor cumulative_logprob); "
                             "leave it unset")
        if self.sparse_retention < 1.0:
            raise ValueError("sparse_retention: must be 1 for block-diffusion models: their cache is exact and every "
                             "later step reads it (nothing is approximated away)")
        if self.block_length is None:
            raise ValueError("block_length: not set (the engine fills in the checkpoint's block size)")
        if self.min_tokens > self.max_tokens:
            raise ValueError(f"min_tokens: {self.min_tokens} exceeds max_tokens={self.max_tokens}")
        self._check_family()

    def _check_family(self) -> None:
        raise NotImplementedError

    def for_family(self, arch: str) -> BlockSamplingParams:
        if arch != self.family:
            raise ValueError(f"model: these are {NAMES[self.family]} parameters, the model is {arch!r}")
        return self

    @property
    def num_blocks(self) -> int:  # noqa: D401 - geometry depends on the prompt: see BlockRequest
        raise AttributeError("num_blocks: block-diffusion blocks are aligned to the prompt (BlockRequest.geometry)")

    @property
    def steps_per_block(self) -> int | None:
        return self.denoising_steps


@dataclass
class SDARParams(BlockSamplingParams):
    family: ClassVar[str] = "sdar"
    NOT_HERE: ClassVar[dict[str, str]] = {
        "steps": "SDAR takes denoising_steps (per block)", "alg": "SDAR takes remasking", "alg_temp": "SDAR has none",
        "eps": "SDAR has none", "refresh_interval": "the block cache is exact: nothing is refreshed",
        "sub_block_length": "a Fast-dLLM v2 setting"}

    def _check_family(self) -> None:
        if self.remasking is None:
            self.remasking = "low_confidence_dynamic"
        if self.denoising_steps is None:
            self.denoising_steps = self.block_length
        if self.denoising_steps > self.block_length:
            raise ValueError(f"denoising_steps: {self.denoising_steps} exceed block_length={self.block_length} "
                             "(a step would commit nothing)")
        if self.remasking == "low_confidence_dynamic":
            self.threshold = SDAR_THRESHOLD if self.threshold is None else self.threshold
        elif self.threshold is not None:
            raise ValueError(f"threshold: read only by remasking='low_confidence_dynamic', not {self.remasking!r}")
        if self.top_k is not None and self.top_p is not None and self.top_p < 1:
            raise ValueError("top_p: SDAR filters top_k before top_p, the opposite of the engine's order; "
                             "set one of them")


@dataclass
class FastDLLMParams(BlockSamplingParams):
    family: ClassVar[str] = "fast_dllm"
    NOT_HERE: ClassVar[dict[str, str]] = {
        "steps": "Fast-dLLM v2 decodes by threshold", "denoising_steps": "Fast-dLLM v2 decodes by threshold",
        "remasking": "Fast-dLLM v2 decodes by threshold", "alg": "Fast-dLLM v2 decodes by threshold",
        "alg_temp": "Fast-dLLM v2 has none", "eps": "Fast-dLLM v2 has none",
        "refresh_interval": "the block cache is exact: nothing is refreshed"}

    def _check_family(self) -> None:
        self.threshold = FAST_DLLM_THRESHOLD if self.threshold is None else self.threshold
        if self.sub_block_length is None:
            self.sub_block_length = largest_block(self.block_length, FAST_DLLM_SUB_BLOCK)
        if self.block_length % self.sub_block_length:
            raise ValueError(f"sub_block_length: {self.sub_block_length} does not divide "
                             f"block_length={self.block_length}")


BLOCK_PARAMS: dict[str, type[BlockSamplingParams]] = {"sdar": SDARParams, "fast_dllm": FastDLLMParams}


def params_for_model(cfg, values: dict | None, defaults: dict) -> SamplingParams:
    """A request's parameters for a model of config `cfg`: a block-diffusion family takes its own knobs,
    its block defaulting to the checkpoint's; LLaDA / Dream take theirs. The engine and the offline
    evaluation build them the same way."""
    values = dict(values or {})
    if cfg.block_causal:
        if values.get("block_length") is None:
            values["block_length"] = defaults.get("block_length") or cfg.block_size
        return BLOCK_PARAMS[cfg.arch].from_dict(values, defaults)
    return SamplingParams.from_dict(values, defaults).for_family(cfg.arch)
