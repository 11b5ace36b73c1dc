"""What to send for one request, given the engine's outputs: the streaming rules in one place.

- streaming: one response per output whose committed tokens completed some text; never an empty
  first chunk; the final output always gives the last response (FINAL flag), carrying the
  `finish_reason` and whatever text was still held;
- non-streaming: exactly one response at the end, with the prompt in front unless
  `exclude_input_in_output`;
- `num_output_tokens` counts the tokens behind each response, so the counts of a stream add up to
  the total (the vLLM backend's convention).

It also keeps the timestamps the metrics need (first delta, gaps between deltas, end to end).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from backend.serving.detokenizer import IncrementalDetokenizer
from backend.serving.inputs import GenerateRequest


@dataclass
class Reply:
    """One response to send. `error` set: send an error response instead (with FINAL)."""
    text: str
    final: bool
    finish_reason: str | None = None
    num_output_tokens: int = 0
    error: str | None = None
    # Log-probabilities asked for (engine computed them): vLLM's JSON entries of the tokens behind
    # this reply, and the running sum over every token sent so far.
    logprobs: list[dict] | None = None
    cumulative_logprob: float = 0.0


@dataclass
class Timing:
    """Seconds, for the metrics; None where the event has not happened."""
    first_delta: float | None = None  # arrival -> first committed text
    between_deltas: list[float] | None = None  # gaps between successive committed texts
    end_to_end: float | None = None


class RequestTracker:
    def __init__(self, request: GenerateRequest, num_prompt_tokens: int, decode: Callable[[list[int]], str],
                 clock: Callable[[], float] = time.monotonic, token_text: Callable[[int], str] | None = None):
        """`token_text`: one token's text for logprobs' `decoded_token` (default: `decode` of it)."""
        self.request = request
        self._token_text = token_text or (lambda t: decode([t]))
        self._unsent_logprobs: list[dict] | None = None
        self.cumulative_logprob = 0.0
        self.num_prompt_tokens = num_prompt_tokens
        self.detok = IncrementalDetokenizer(decode)
        self.clock = clock
        self.arrival = clock()
        self._last_delta_at: float | None = None
        self._unsent_tokens = 0
        self.finished = False
        self.num_output_tokens = 0
        self.timing = Timing(between_deltas=[])

    def on_output(self, out) -> Reply | None:
        """`out`: a backend.engine.outputs.RequestOutput. Returns the response to send now, if any."""
        if self.finished:
            return None  # defensive: nothing may follow the final response
        text = self.detok.push(out.new_token_ids)
        self._unsent_tokens += len(out.new_token_ids)
        self.num_output_tokens = out.num_output_tokens
        if getattr(out, "logprobs", None) is not None:
            self._take_logprobs(out.new_token_ids, out.logprobs)
        if text:
            self._mark_delta()
        if out.finished:
            return self._finish(out, text)
        if not self.request.stream or not text:
            return None
        return self._reply(text, final=False)

    def _finish(self, out, text: str) -> Reply:
        self.finished = True
        self.timing.end_to_end = self.clock() - self.arrival
        if out.finish_reason == "error":
            message = f"internal error: {out.error or 'engine failure'}"
            return Reply(text="", final=True, finish_reason="error", error=message)
        tail = self.detok.finish()
        if tail:
            self._mark_delta()
        text += tail
        if not self.request.stream:
            text = self.detok.text if self.request.exclude_input_in_output else self.request.prompt + self.detok.text
        return self._reply(text, final=True, finish_reason=out.finish_reason)

    def _reply(self, text: str, final: bool, finish_reason: str | None = None) -> Reply:
        tokens, self._unsent_tokens = self._unsent_tokens, 0
        if not self.request.stream:
            tokens = self.num_output_tokens
        logprobs = self._unsent_logprobs
        if logprobs is not None:
            self._unsent_logprobs = []
        return Reply(text=text, final=final, finish_reason=finish_reason, num_output_tokens=tokens,
                     logprobs=logprobs, cumulative_logprob=self.cumulative_logprob)

    def _take_logprobs(self, token_ids: list[int], entries: list[tuple]) -> None:
        """vLLM's shape per token: {token id: {logprob, rank, decoded_token}} for the committed token
        and each asked-for alternative (rank 1 = most likely)."""
        if self._unsent_logprobs is None:
            self._unsent_logprobs = []
        for tok, (lp, rank, top) in zip(token_ids, entries, strict=True):
            d = {tok: {"logprob": lp, "rank": rank, "decoded_token": self._token_text(tok)}}
            for r, (alt, alt_lp) in enumerate(top, 1):
                d.setdefault(alt, {"logprob": alt_lp, "rank": r, "decoded_token": self._token_text(alt)})
            self._unsent_logprobs.append(d)
            self.cumulative_logprob += lp

    def _mark_delta(self) -> None:
        now = self.clock()
        if self._last_delta_at is None:
            self.timing.first_delta = now - self.arrival
        else:
            self.timing.between_deltas.append(now - self._last_delta_at)
        self._last_delta_at = now

    def take_gaps(self) -> list[float]:
        """The gaps recorded since the last call (the metrics thread observes each once)."""
        gaps, self.timing.between_deltas = self.timing.between_deltas, []
        return gaps


def logprobs_json(entries: list[dict] | None) -> str:
    """What the `logprobs` output holds for one answer: its entries as JSON, or "null"."""
    return "null" if entries is None else json.dumps(entries)
