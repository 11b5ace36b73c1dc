"""A character-level tokenizer written as a Hugging Face `tokenizer.json`, so the default model's
tokenizer loads through the same code path (`backend.models.tokenizer.Tokenizer`) as a real checkpoint's.

One token per character of ALPHABET, then the special tokens. Two details make decode the exact
inverse of encode: the pre-tokenizer splits every character (newlines included) into its own word,
and the `Fuse` decoder concatenates tokens (a bare WordLevel model would join them with spaces).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

# Everything the tasks print, plus a little punctuation for free-form prompts.
ALPHABET = string.digits + string.ascii_lowercase + " \n:+=?,.-"
UNK, EOS, PAD, MASK = "<|unk|>", "<|eos|>", "<|pad|>", "<|mdm_mask|>"
SPECIALS = (UNK, EOS, PAD, MASK)


def build() -> Tokenizer:
    vocab = {ch: i for i, ch in enumerate(ALPHABET)}
    tok = Tokenizer(models.WordLevel(vocab={**vocab, UNK: len(vocab)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    # UNK is already in the model vocabulary; adding it as special makes decode skip it.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tok

# The model knows no conversation format, only its task prompts ("1234+4321=", "sort dcba =", ...): a chat
# (the OpenAI-compatible server's /v1/chat/completions) reaches it as the last message's text, which must be
# the user's; system messages and earlier turns are not shown to it.
CHAT_TEMPLATE = ("{%- if not messages or messages[-1]['role'] != 'user' -%}"
                 "{{ raise_exception('the last message must have the role user: this model answers one task prompt') }}"
                 "{%- endif -%}"
                 "{{ messages[-1]['content'] }}")


def special_ids(tok: Tokenizer | None = None) -> dict[str, int]:
    tok = tok or build()
    return {"unk": tok.token_to_id(UNK), "eos": tok.token_to_id(EOS), "pad": tok.token_to_id(PAD),
            "mask": tok.token_to_id(MASK)}


def save(path: str | Path) -> Tokenizer:
    """Write tokenizer.json and tokenizer_config.json (special tokens, and CHAT_TEMPLATE) into `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build()
    tok.save(str(path / "tokenizer.json"))
    ids = special_ids(tok)
    added = {str(ids[k]): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                           "normalized": False, "single_word": False}
             for k, t in (("unk", UNK), ("eos", EOS), ("pad", PAD), ("mask", MASK))}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": UNK, "eos_token": EOS,
              "pad_token": PAD, "mask_token": MASK, "added_tokens_decoder": added,
              "model_max_length": 512, "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE}
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return tok
