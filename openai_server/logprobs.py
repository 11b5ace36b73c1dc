"""The model's `logprobs` output in OpenAI's two shapes.

The model sends, per answer and response, a JSON list with one entry per token that response carries:
`{"<token_id>": {"logprob": float, "rank": int, "decoded_token": str}, ...}`, the committed token first
and then its k most likely alternatives (the vLLM backend's format; the committed token is among them
when its rank is <= k, then the entry holds k items). OpenAI's top list is the k best, by rank.
"""

from __future__ import annotations

from openai.types.chat.chat_completion_token_logprob import ChatCompletionTokenLogprob, TopLogprob
from openai.types.completion_choice import Logprobs as CompletionLogprobs


def _entries(position: dict) -> tuple[dict, list[dict]]:
    """(the committed token's entry, the alternatives by rank)."""
    items = list(position.values())
    if not items:
        raise ValueError("logprobs: an empty entry for a token")
    return items[0], sorted(items, key=lambda e: e["rank"])


def _bytes(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def chat_logprobs(positions: list[dict], k: int) -> list[ChatCompletionTokenLogprob]:
    out = []
    for position in positions:
        chosen, ranked = _entries(position)
        top = [TopLogprob(token=e["decoded_token"], bytes=_bytes(e["decoded_token"]), logprob=e["logprob"])
               for e in ranked[:k]]
        out.append(ChatCompletionTokenLogprob(token=chosen["decoded_token"], bytes=_bytes(chosen["decoded_token"]),
                                              logprob=chosen["logprob"], top_logprobs=top))
    return out


def completion_logprobs(positions: list[dict], k: int, offset: int) -> CompletionLogprobs:
    """`offset`: where this text starts in the answer's text (OpenAI's `text_offset` counts characters)."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    for position in positions:
        chosen, ranked = _entries(position)
        tokens.append(chosen["decoded_token"])
        token_logprobs.append(chosen["logprob"])
        tops.append({e["decoded_token"]: e["logprob"] for e in ranked[:k]})
        offsets.append(offset)
        offset += len(chosen["decoded_token"])
    return CompletionLogprobs(tokens=tokens, token_logprobs=token_logprobs, top_logprobs=tops, text_offset=offsets)


def merge_completion(parts: list[CompletionLogprobs]) -> CompletionLogprobs:
    merged = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    for p in parts:
        merged.tokens += p.tokens
        merged.token_logprobs += p.token_logprobs
        merged.top_logprobs += p.top_logprobs
        merged.text_offset += p.text_offset
    return merged
