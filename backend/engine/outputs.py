"""What the engine reports per request and step."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestOutput:
    """One delta of one request: the newly grown committed contiguous prefix (append-only)."""

    request_id: str
    new_token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None  # "eos" | "length" | "stop" | "abort" | "error"
    error: str | None = None
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0  # total streamed so far, this delta included
    forwards: int = 0  # model forwards (denoising steps) this request has taken
    # params.logprobs set: per new token, (logprob, rank, [(token id, logprob), ...] best first)
    logprobs: list[tuple] | None = None


@dataclass
class GenerationResult:
    """A finished request, as the offline `Engine.generate` returns it."""

    request_id: str
    token_ids: list[int]
    finish_reason: str
    num_prompt_tokens: int
    forwards: int
    text: str | None = None
    error: str | None = None
    deltas: list[list[int]] = field(default_factory=list)
    logprobs: list[tuple] | None = None  # per token, as RequestOutput.logprobs
