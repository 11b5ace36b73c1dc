"""The answers of one Triton request: one RequestTracker per answer (`n` of them, see vllm_keys.py),
and what to send for them together, as vLLM's Triton backend sends it.

vLLM's words (its backend writes `str(output.finish_reason)` for each answer of every response):
- `finish_reason` is `"None"` on a response before the answer has finished; at the end `stop` (an
  end-of-sequence token or a stop string), `length` or `abort`. The dLLM's own detail (`eos` or
  `stop_string`) goes to the optional `finish_detail` output instead.
- every response holds one element per answer in `text_output`, `finish_reason`,
  `num_output_tokens`: a stream sends a response when any answer's text grows, with `""` and 0 for
  the others; the FINAL flag comes once every answer has finished.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.serving.request_tracker import RequestTracker, Timing

# The engine's finish reasons in vLLM's words, and in ours (finish_detail).
VLLM_REASON = {"eos": "stop", "stop": "stop", "length": "length", "abort": "abort"}
DETAIL = {"eos": "eos", "stop": "stop_string", "length": "length", "abort": "abort"}
NOT_FINISHED = "None"  # what vLLM's backend sends (str(None)) before an answer has finished


@dataclass
class GroupReply:
    texts: list[str]
    final: bool
    reasons: list[str | None]  # the engine's finish reason per answer (None: not finished)
    num_output_tokens: list[int]
    error: str | None = None
    aborted: bool = False  # the engine let go of an answer without finishing it (shutting down)
    logprobs: list[list[dict] | None] | None = None  # per answer: entries of its tokens in this response
    cumulative_logprobs: list[float] | None = None  # per answer: the sum over its tokens sent so far

    @property
    def vllm_reasons(self) -> list[str]:
        return [NOT_FINISHED if r is None else VLLM_REASON.get(r, r) for r in self.reasons]

    @property
    def details(self) -> list[str]:
        return [NOT_FINISHED if r is None else DETAIL.get(r, r) for r in self.reasons]


@dataclass
class AnswerGroup:
    trackers: list[RequestTracker]
    sub_ids: list[str]  # the engine request id of each answer

    def __post_init__(self):
        self._index = {sid: i for i, sid in enumerate(self.sub_ids)}
        n = len(self.trackers)
        self._reasons: list[str | None] = [None] * n
        self._texts = [""] * n
        self._tokens = [0] * n
        self._done = [False] * n
        self._forwards = [0] * n
        self._logprobs: list[list[dict] | None] = [None] * n
        self._cumulative = [0.0] * n
        self.finished = False

    @property
    def request(self):
        return self.trackers[0].request

    @property
    def num_prompt_tokens(self) -> int:
        return self.trackers[0].num_prompt_tokens

    def on_output(self, sub_id: str, out) -> GroupReply | None:
        """`out`: an engine RequestOutput of answer `sub_id`. Returns the response to send now, if any."""
        if self.finished:
            return None
        i = self._index[sub_id]
        self._forwards[i] = out.forwards
        reply = self.trackers[i].on_output(out)
        if reply is None:
            return None
        if reply.error is not None or reply.finish_reason == "abort":
            self.finished = True
            return GroupReply([], True, [], [], error=reply.error, aborted=reply.error is None)
        self._texts[i] += reply.text
        self._tokens[i] += reply.num_output_tokens
        if reply.logprobs is not None:
            self._logprobs[i] = (self._logprobs[i] or []) + reply.logprobs
        self._cumulative[i] = reply.cumulative_logprob
        if reply.final:
            self._done[i], self._reasons[i] = True, reply.finish_reason
        if all(self._done):
            self.finished = True
            return self._take(final=True)
        return self._take(final=False) if self.request.stream else None

    def _take(self, final: bool) -> GroupReply:
        out = GroupReply(self._texts, final, list(self._reasons), self._tokens,
                         logprobs=[lp or [] for lp in self._logprobs], cumulative_logprobs=list(self._cumulative))
        n = len(self.trackers)
        self._texts, self._tokens = [""] * n, [0] * n
        self._logprobs = [None] * n
        return out

    def num_output_tokens(self) -> int:
        return sum(t.num_output_tokens for t in self.trackers)

    def forwards(self) -> int:
        return sum(self._forwards)

    def merged_timing(self) -> Timing:
        """The first answer's text marks the first delta; the last answer's end the end to end."""
        firsts = [t.timing.first_delta for t in self.trackers if t.timing.first_delta is not None]
        ends = [t.timing.end_to_end for t in self.trackers if t.timing.end_to_end is not None]
        return Timing(first_delta=min(firsts) if firsts else None, end_to_end=max(ends) if ends else None)

    def take_gaps(self) -> list[float]:
        return [g for t in self.trackers for g in t.take_gaps()]
