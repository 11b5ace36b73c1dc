"""Incremental detokenization: deltas concatenate to the full decode, never split a character."""

import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from backend.serving.detokenizer import REPLACEMENT, IncrementalDetokenizer


def byte_level_tokenizer() -> Tokenizer:
    """A byte-level BPE with no merges: every UTF-8 byte is its own token, so multi-byte characters
    always span several tokens (the hard case)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(sorted(alphabet))}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def metaspace_tokenizer(text: str) -> Tokenizer:
    """SentencePiece-style: words carry a leading '▁' that decodes to a space, dropped at the start."""
    words = {w for w in text.replace(" ", " \u2581").split(" ")} | {"\u2581" + w for w in text.split(" ")}
    vocab = {"<unk>": 0, **{w: i + 1 for i, w in enumerate(sorted(words))}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return tok


TEXT = "naïve café: 日本語 テキスト, emoji 🙂👍🏽 and ascii."


def stream(tok, ids, rng):
    detok = IncrementalDetokenizer(lambda x: tok.decode(x))
    deltas, i = [], 0
    while i < len(ids):
        n = rng.randint(1, 4)
        deltas.append(detok.push(ids[i:i + n]))
        i += n
    deltas.append(detok.finish())
    return deltas


@pytest.mark.parametrize("seed", range(5))
def test_byte_level_deltas_concatenate_to_full_decode(seed):
    tok = byte_level_tokenizer()
    ids = tok.encode(TEXT).ids
    assert len(ids) > len(TEXT)  # multi-byte characters span tokens
    deltas = stream(tok, ids, random.Random(seed))
    assert "".join(deltas) == tok.decode(ids) == TEXT
    assert not any(REPLACEMENT in d for d in deltas)


def test_one_token_at_a_time_never_splits_a_character():
    tok = byte_level_tokenizer()
    ids = tok.encode("é🙂").ids
    detok = IncrementalDetokenizer(lambda x: tok.decode(x))
    deltas = [detok.push([t]) for t in ids]
    assert deltas == ["", "é", "", "", "", "🙂"]


def test_metaspace_keeps_spaces_between_deltas():
    text = "the quick brown fox"
    tok = metaspace_tokenizer(text)
    ids = tok.encode(text).ids
    detok = IncrementalDetokenizer(lambda x: tok.decode(x))
    deltas = [detok.push([t]) for t in ids] + [detok.finish()]
    assert "".join(deltas) == tok.decode(ids) == text


def test_invalid_bytes_at_the_end_come_out_on_finish():
    tok = byte_level_tokenizer()
    first_byte_of_emoji = tok.encode("🙂").ids[:1]
    detok = IncrementalDetokenizer(lambda x: tok.decode(x))
    assert detok.push(tok.encode("ok").ids) == "ok"
    assert detok.push(first_byte_of_emoji) == ""
    assert detok.finish() == REPLACEMENT
    assert detok.text == "ok" + REPLACEMENT


def test_empty_push_and_finish_are_harmless():
    detok = IncrementalDetokenizer(lambda x: "".join(chr(97 + t) for t in x))
    assert detok.push([]) == "" and detok.finish() == ""
    assert detok.push([0, 1]) == "ab" and detok.push([2]) == "c" and detok.finish() == ""
