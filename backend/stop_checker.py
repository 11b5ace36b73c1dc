"""End-of-generation detection on the committed prefix: stop token ids and stop strings."""

from __future__ import annotations

from backend.sampling_params import SamplingParams


class StopChecker:
    def __init__(self, tokenizer, stop_token_ids: list[int]):
        self.tokenizer = tokenizer
        self.stop_token_ids = set(stop_token_ids)

    def check(self, prefix: list[int], params: SamplingParams, streamed: int) -> tuple[int, str | None]:
        """(how many prefix tokens may be streamed, finish reason or None).

        EOS: the tokens before the first stop id. Stop strings: the tokens whose text ends before the
        first occurrence; a stop string in the text before an EOS committed in the same step wins
        (it ends the text earlier). While no stop string has occurred, tokens whose text could be the
        start of one are held back, because streamed text cannot be taken back.
        """
        eos_at = None
        if not params.ignore_eos:
            eos_at = next((i for i, t in enumerate(prefix) if t in self.stop_token_ids), None)
        text_ids = prefix if eos_at is None else prefix[:eos_at]
        if not params.stop or self.tokenizer is None or not text_ids:
            return (len(prefix), None) if eos_at is None else (eos_at, "eos")
        text = self.tokenizer.decode(text_ids)
        hits = [i for i in (text.find(s) for s in params.stop) if i >= 0]
        if hits:
            return max(self._tokens_within(text_ids, min(hits)), streamed), "stop"
        if eos_at is not None:
            return eos_at, "eos"
        held = max((m for s in params.stop for m in range(1, len(s)) if text.endswith(s[:m])), default=0)
        return max(self._tokens_within(prefix, len(text) - held), streamed), None

    def _tokens_within(self, prefix: list[int], chars: int) -> int:
        """The most leading tokens whose decoded text is at most `chars` characters (binary search:
        the decoded length grows with the number of tokens)."""
        lo, hi = 0, len(prefix)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(self.tokenizer.decode(prefix[:mid])) <= chars:
                lo = mid
            else:
                hi = mid - 1
        return lo
