"""Tokenizers from local checkpoint files: special ids, chat template, vocab/merges fallback."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from backend.models.tokenizer import Tokenizer

CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, hello diffusion", "12 + 34 = 46"] * 20
SPECIALS = ["<|endoftext|>", "<|mdm_mask|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>"
            "{{ m['content'] }}<|eot_id|>{% endfor %}"
            "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>{% endif %}")


def _byte_bpe() -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


@pytest.fixture
def tok_dir(tmp_path):
    _byte_bpe().save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<|endoftext|>", "eos_token": {"content": "<|endoftext|>"}, "chat_template": TEMPLATE}))
    return tmp_path


def test_round_trip_and_special_ids_from_tokenizer(tok_dir):
    tok = Tokenizer(tok_dir)
    text = "hello world, the lazy fox ünïcödé"
    assert tok.decode(tok.encode(text)) == text
    hf = HFTokenizer.from_file(str(tok_dir / "tokenizer.json"))
    assert tok.mask_token_id == hf.token_to_id("<|mdm_mask|>")
    assert tok.eos_token_id == hf.token_to_id("<|endoftext|>")
    assert tok.eot_token_id == hf.token_to_id("<|eot_id|>")
    assert tok.stop_token_ids == [tok.eos_token_id, tok.eot_token_id]
    assert tok.decode([tok.eos_token_id]) == ""
    assert tok.vocab_size == hf.get_vocab_size()


def test_model_config_ids_win_and_overrides_win_over_both(tok_dir):
    (tok_dir / "config.json").write_text(json.dumps({"mask_token_id": 7, "eos_token_id": [8, 9]}))
    tok = Tokenizer(tok_dir)
    assert (tok.mask_token_id, tok.eos_token_id) == (7, 8)
    tok = Tokenizer(tok_dir, mask_token_id=3, eos_token_id=4, eot_token_id=5)
    assert (tok.mask_token_id, tok.eos_token_id, tok.eot_token_id) == (3, 4, 5)


def test_chat_template(tok_dir):
    tok = Tokenizer(tok_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}])
    assert text == ("<|endoftext|><|start_header_id|>user<|end_header_id|>hi<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>")
    assert tok.encode(text)[0] == tok.eos_token_id  # special tokens are atomic ids


def test_no_template_uses_last_message(tok_dir):
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>"}))
    assert Tokenizer(tok_dir).apply_chat_template([{"role": "user", "content": "plain"}]) == "plain"


def test_missing_mask_is_a_clear_error(tmp_path):
    tok = HFTokenizer(models.WordLevel({"a": 0, "<eos>": 1}, unk_token="a"))
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    with pytest.raises(ValueError, match="mask_token_id"):
        Tokenizer(tmp_path)
    assert Tokenizer(tmp_path, mask_token_id=0).eos_token_id == 1


def test_vocab_merges_fallback_matches_tokenizer_json(tmp_path):
    """A Qwen2-style directory without tokenizer.json (vocab.json + merges.txt) still loads."""
    hf = _byte_bpe()
    hf.model.save(str(tmp_path))  # writes vocab.json and merges.txt
    added = {str(hf.token_to_id(s)): {"content": s, "special": True} for s in SPECIALS}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "added_tokens_decoder": added}))
    tok = Tokenizer(tmp_path)
    text = "hello world, the quick dog"
    assert tok.decode(tok.encode(text)) == text
    assert tok.mask_token_id == hf.token_to_id("<|mdm_mask|>")


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer(tmp_path)


def test_special_token_text_parsed_only_when_asked(tok_dir):
    tok = Tokenizer(tok_dir)
    text = "hello <|eot_id|> world <|mdm_mask|>"
    parsed = tok.encode(text)
    plain = tok.encode(text, parse_special_tokens=False)
    assert tok.eot_token_id in parsed and tok.mask_token_id in parsed
    assert tok.eot_token_id not in plain and tok.mask_token_id not in plain
    assert tok.decode(plain) == text  # the markers survive as the plain text they are
    assert tok.encode("hello world", parse_special_tokens=False) == tok.encode("hello world")


def test_max_token_bytes_bounds_every_token(tok_dir):
    tok = Tokenizer(tok_dir)
    longest = max(len(tok.decode([i], skip_special_tokens=False).encode()) for i in range(tok.vocab_size))
    assert tok.max_token_bytes >= longest and tok.max_token_bytes >= 4
