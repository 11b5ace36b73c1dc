"""Incremental detokenization: token-id deltas in, append-only text deltas out.

Decoding each delta on its own is wrong in two ways: a byte-level BPE token can hold half of a
multi-byte character (decoded alone it gives U+FFFD, and the next delta another), and decoders that
drop a leading space (SentencePiece's metaspace) or merge pieces change text at token boundaries.

So we decode a short window that ends at the newest token and starts a little before the last text
we emitted, and emit only the part past the text that window already produced. While the window
ends in an incomplete character (U+FFFD at the end), nothing is emitted: the next tokens complete it.
The concatenated deltas equal `decode(all ids)` for decoders whose output over a window is a prefix
of their output over a longer window, which holds for byte-level BPE, metaspace and character
tokenizers; `finish()` releases whatever is still held (a truly invalid byte stays U+FFFD).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str]):
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0  # window start: context that fixes spacing/merges at the boundary
        self._read = 0  # everything before this index has been emitted as text
        self.text = ""  # all text emitted so far

    @property
    def num_tokens(self) -> int:
        return len(self._ids)

    def push(self, new_ids: Sequence[int]) -> str:
        """Add tokens; return the newly completed text (possibly empty)."""
        self._ids.extend(int(t) for t in new_ids)
        return self._emit(final=False)

    def finish(self) -> str:
        """The text still held back (an incomplete character at the end), as is."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        if self._read == len(self._ids):
            return ""
        before = self._decode(self._ids[self._prefix:self._read])
        window = self._decode(self._ids[self._prefix:])
        if not final and window.endswith(REPLACEMENT):
            return ""
        if window.startswith(before):
            delta = window[len(before):]
        else:
            # The decoder rewrote text that was already emitted (should not happen for the decoders
            # above). Text is append-only, so fall back to the full decode and emit only what lies
            # past what was sent; never repeat or retract.
            full = self._decode(self._ids)
            delta = full[len(self.text):] if full.startswith(self.text) else ""
        # Keep the last emitted tokens as context for the next window, so a boundary space or merge
        # is decoded the same way as in the full text.
        self._prefix, self._read = self._read, len(self._ids)
        self.text += delta
        return delta
