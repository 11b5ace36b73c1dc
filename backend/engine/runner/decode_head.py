"""Logit-aware activation budgeting: project only the rows being decoded, a budget's worth at a time.

Full `[rows, vocab]` logits for every computed row never exist: the caller passes the hidden rows
of masked positions only, and they are projected in chunks whose row count comes from a byte
budget (chunks may split a request). Each chunk is reduced at once to (token, confidence) per row
and freed. Rows are independent (counter-based noise), so chunking never changes the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from backend.engine.runner.logprobs import TokenLogprobs, token_logprobs
from backend.engine.runner.sampling import pick_tokens
from backend.models.layers import VocabHead


@dataclass
class DecodeRows:
    """Per row to decode: which hidden row predicts it, its position, and its request's sampling."""

    hidden_index: torch.Tensor  # [R] long, rows of the packed hidden states
    positions: torch.Tensor  # [R] long, absolute token positions (noise counters)
    temperature: torch.Tensor  # [R] float64
    seed: torch.Tensor  # [R] long
    step: torch.Tensor  # [R] long
    random_remask: torch.Tensor  # [R] bool
    alg: torch.Tensor | None = None  # [R] long, sampling.ALG_CODES (None: from random_remask, LLaDA)
    top_p: torch.Tensor | None = None  # [R] float64, 1 = off
    top_k: torch.Tensor | None = None  # [R] long, 0 = off
    alg_temp: torch.Tensor | None = None  # [R] float64, 0 = off
    logprob_rows: list[int] | None = None  # host: the rows (ascending) whose request asked for logprobs
    top_logprobs: int = 0  # alternatives per such row: the most any of those requests asked for

    @property
    def num_rows(self) -> int:
        return int(self.positions.numel())


# Dream's rules and the top_p / top_k filters hold a few more [rows, vocab] temporaries at once
# (tempered logits, the sorted copy and its int64 indices, probabilities): rows cost this much more.
HEAVY_ROW_FACTOR = 4


def rows_per_chunk(vocab: int, logits_dtype: torch.dtype, sampling: bool, budget_bytes: int,
                   heavy: bool = False) -> int:
    """How many rows fit the budget. A row costs `vocab` elements of the widest temporary: 4 bytes
    for greedy float32 work, 8 when float64 noise (or a float64 model) is involved, times
    HEAVY_ROW_FACTOR for Dream's rules or filters (`heavy`)."""
    width = (8 if sampling or logits_dtype == torch.float64 else 4) * (HEAVY_ROW_FACTOR if heavy else 1)
    return max(1, int(budget_bytes) // (vocab * width))


def budgeted_decode(hidden: torch.Tensor, head: VocabHead, rows: DecodeRows, budget_bytes: int,
                    mask_token_id: int | None, sampling: bool | None = None,
                    any_random: bool | None = None, any_dream: bool | None = None,
                    any_filter: bool | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, int, TokenLogprobs | None]:
    """Returns (tokens [R], confidences [R], number of chunks, log-probabilities of the rows in
    `rows.logprob_rows`, in that order, or None when no row asked). `sampling` (some row has temperature
    > 0), `any_random` (some row remasks at random), `any_dream` (some row follows a Dream alg) and
    `any_filter` (some row has top_p / top_k) may be given by a caller that knows them on the host,
    which spares the device reads that would otherwise find out."""
    n = rows.num_rows
    tokens = torch.empty(n, dtype=torch.long, device=hidden.device)
    conf = torch.empty(n, dtype=torch.float64 if hidden.dtype == torch.float64 else torch.float32,
                       device=hidden.device)
    want = rows.logprob_rows or []
    if n == 0:
        return tokens, conf, 0, None
    vocab = head.matrix.shape[0]
    if sampling is None:
        sampling = bool((rows.temperature > 0).any())
    if any_dream is None:
        any_dream = rows.alg is not None and bool((rows.alg >= 2).any())
    if any_filter is None:
        any_filter = (rows.top_p is not None and bool((rows.top_p < 1).any())) or (
            rows.top_k is not None and bool((rows.top_k > 0).any()))
    chunk = rows_per_chunk(vocab, hidden.dtype, sampling, budget_bytes, heavy=any_dream or any_filter or bool(want))
    chunks = 0
    parts, w = [], 0
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        logits = head(hidden.index_select(0, rows.hidden_index[s:e]))
        t, c = pick_tokens(logits, rows.positions[s:e], rows.temperature[s:e], rows.seed[s:e], rows.step[s:e],
                           rows.random_remask[s:e], mask_token_id, sampling=sampling, any_random=any_random,
                           alg=_part(rows.alg, s, e), top_p=_part(rows.top_p, s, e), top_k=_part(rows.top_k, s, e),
                           alg_temp=_part(rows.alg_temp, s, e), any_dream=any_dream, any_filter=any_filter)
        tokens[s:e], conf[s:e] = t, c
        w_end = w
        while w_end < len(want) and want[w_end] < e:
            w_end += 1
        if w_end > w:
            sel = torch.tensor([i - s for i in want[w:w_end]], dtype=torch.long, device=hidden.device)
            parts.append(token_logprobs(logits.index_select(0, sel), t.index_select(0, sel), mask_token_id,
                                        rows.top_logprobs))
            w = w_end
        chunks += 1
        del logits
    return tokens, conf, chunks, (TokenLogprobs.cat(parts) if parts else None)


def fused_greedy_decode(hidden: torch.Tensor, head: VocabHead, rows: DecodeRows,
                        mask_token_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens, confidences) of greedy low_confidence rows (temperature 0, no top_p / top_k, no
    logprobs) through the Triton kernel that fuses the projection with the pick: what `budgeted_decode`
    gives for such rows, without logits (CUDA; the tests run it under TRITON_INTERPRET=1)."""
    from kernels.fused_decode_head import greedy_head

    return greedy_head(hidden, rows.hidden_index, head.matrix, mask_token_id, head.scale)


def _part(t: torch.Tensor | None, s: int, e: int) -> torch.Tensor | None:
    return None if t is None else t[s:e]
