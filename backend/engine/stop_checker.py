"""End-of-generation detection on the committed prefix: stop token ids and stop strings.

It runs on the engine thread for every request at every step, so its cost must grow no faster than
linearly in the request's own size (committed tokens, stop strings). Stop ids are looked for only
past what was already streamed, so without stop strings a step costs about what it committed. With
them: one decode of the prefix, one linear substring search per stop string, a KMP pass over at most
the last len(stop) - 1 characters for the text to hold back, and decodes only near the end of the
prefix to turn characters into tokens. Stop strings are bounded by validation (SamplingParams).
"""

from __future__ import annotations

from functools import lru_cache

from backend.engine.sampling_params import SamplingParams


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
        # min_tokens: the first min_tokens positions cannot end the generation. A stop id there is
        # kept as a token (as with ignore_eos), a stop string must end past their text.
        floor = getattr(params, "min_tokens", 0)  # duck-typed params (tests) may predate it
        eos_at = None if params.ignore_eos else self._first_stop_id(prefix, max(streamed, floor))
        text_ids = prefix if eos_at is None else prefix[:eos_at]
        if not params.stop or self.tokenizer is None or not text_ids:
            return (len(prefix), None) if eos_at is None else (eos_at, "eos")
        text = self.tokenizer.decode(text_ids)
        floor_chars = len(self.tokenizer.decode(text_ids[:floor])) if floor else 0
        hits = [(i, i + len(s)) for i, s in ((text.find(s, max(0, floor_chars - len(s) + 1)), s)
                                               for s in params.stop) if i >= 0]
        if hits:
            start, end = min(hits)
            if not getattr(params, "include_stop_str_in_output", False):
                return self._tokens_within(text_ids, start, streamed), "stop"
            keep = self._tokens_within(text_ids, end, streamed)
            if keep < len(text_ids) and len(self.tokenizer.decode(text_ids[:keep])) < end:
                keep += 1  # the token that completes the stop string (it may carry a few more characters)
            return keep, "stop"
        if eos_at is not None:
            return eos_at, "eos"
        held = max(partial_match(text, s) for s in params.stop)
        return self._tokens_within(prefix, len(text) - held, streamed), None

    def _first_stop_id(self, prefix: list[int], start: int) -> int | None:
        """Index of the first stop id at or after `start` (the streamed tokens hold none: a stop id
        among them would have finished the request), searched at C speed by list.index."""
        first = None
        for t in self.stop_token_ids:
            try:
                first = prefix.index(t, start, len(prefix) if first is None else first)
            except ValueError:
                pass
        return first

    def _tokens_within(self, prefix: list[int], chars: int, streamed: int) -> int:
        """max(streamed, the most leading tokens whose decoded text is at most `chars` characters).

        The decoded length grows with the number of tokens. The answer is usually a few tokens
        from the end (what is held back is shorter than a stop string), so the search gallops back
        from the end, then bisects: O(log distance) decodes of the prefix."""
        def fits(k: int) -> bool:
            return len(self.tokenizer.decode(prefix[:k])) <= chars

        hi = len(prefix)
        if hi <= streamed or fits(hi):
            return max(hi, streamed)
        step = 1
        while True:  # prefix[:hi] does not fit
            lo = max(hi - step, streamed)
            if fits(lo):
                break
            if lo == streamed:
                return streamed
            hi, step = lo, step * 2
        while hi - lo > 1:  # prefix[:lo] fits, prefix[:hi] does not
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return lo


def partial_match(text: str, stop: str) -> int:
    """The length of the longest end of `text` that is a proper beginning of `stop` (what must be
    held back because the next tokens could complete the stop string). Linear in len(stop): a KMP
    pass over at most the last len(stop) - 1 characters of the text."""
    tail = text[max(0, len(text) - len(stop) + 1):] if len(stop) > 1 else ""
    if not tail or stop[0] not in tail:
        return 0
    fail = _failure(stop)
    j = 0
    for c in tail:
        while j and c != stop[j]:
            j = fail[j - 1]
        if c == stop[j]:
            j += 1
            if j == len(stop):  # a whole occurrence (not expected: hits are found first)
                j = fail[j - 1]
    return j


@lru_cache(maxsize=1024)
def _failure(s: str) -> tuple[int, ...]:
    """KMP failure function: f[i] = length of the longest proper border of s[:i + 1]."""
    f = [0] * len(s)
    k = 0
    for i in range(1, len(s)):
        while k and s[i] != s[k]:
            k = f[k - 1]
        if s[i] == s[k]:
            k += 1
        f[i] = k
    return tuple(f)
