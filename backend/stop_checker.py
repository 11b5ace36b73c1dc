"""End-of-generation detection on the committed prefix: stop token ids and stop strings."""

from __future__ import annotations

from backend.sampling_params import SamplingParams


class StopChecker:
    def __init__(self, tokenizer, stop_token_ids: list[int]):
        self.tokenizer = tokenizer
        self.stop_token_ids = set(stop_token_ids)

    def check(self, prefix: list[int], params: SamplingParams, streamed: int) -> tuple[int, str | None]:
        """(how many prefix tokens to keep, finish reason or None).

        EOS: keep the tokens before the first stop id. Stop strings: keep the tokens whose text ends
        before the first occurrence (text already streamed cannot be taken back, so at least
        `streamed` tokens are kept).
        """
        if not params.ignore_eos:
            for i, t in enumerate(prefix):
                if t in self.stop_token_ids:
                    return i, "eos"
        if params.stop and self.tokenizer is not None and prefix:
            text = self.tokenizer.decode(prefix)
            hits = [i for i in (text.find(s) for s in params.stop) if i >= 0]
            if hits:
                start = min(hits)
                keep = 0
                while keep < len(prefix) and len(self.tokenizer.decode(prefix[:keep + 1])) <= start:
                    keep += 1
                return max(keep, streamed), "stop"
        return len(prefix), None
