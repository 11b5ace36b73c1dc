"""Hugging Face tokenizers from a checkpoint directory (local files only), chat template included."""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from backend import chat_template

# Qwen2's pre-tokenizer split, used when a Dream/Qwen2 directory ships vocab.json + merges.txt only.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# End-of-turn tokens of the chat models we know (LLaDA-Instruct, Qwen2/Dream).
EOT_CANDIDATES = ("<|eot_id|>", "<|im_end|>")


def _token_text(v) -> str | None:
    return v.get("content") if isinstance(v, dict) else v


class Tokenizer:
    """Encode/decode plus the special ids a diffusion decoder needs.

    Special ids resolve in this order: explicit argument, the model's `config.json`, the tokenizer's
    own special tokens. A missing mask id is an error; a model cannot be decoded without it.
    """

    def __init__(self, path: str | Path, mask_token_id: int | None = None, eos_token_id: int | None = None,
                 eot_token_id: int | None = None):
        path = Path(path)
        self.path = path
        self._tok = self._load(path)
        self._plain: HFTokenizer | None = None
        self._max_token_bytes: int | None = None
        tcfg = self._read_json(path / "tokenizer_config.json")
        mcfg = self._read_json(path / "config.json")
        self.chat_template = chat_template.template_from_config(path, tcfg)
        self.bos_token = _token_text(tcfg.get("bos_token"))
        self.eos_token = _token_text(tcfg.get("eos_token"))

        def by_text(text):
            return self._tok.token_to_id(text) if text else None

        self.mask_token_id = self._first(mask_token_id, mcfg.get("mask_token_id"),
                                         by_text(_token_text(tcfg.get("mask_token"))), by_text("<|mdm_mask|>"),
                                         by_text("[MASK]"))
        if self.mask_token_id is None:
            raise ValueError(f"mask_token_id: not found in {path} (config.json, tokenizer_config.json); pass it")
        eos_cfg = mcfg.get("eos_token_id")
        eos_cfg = eos_cfg[0] if isinstance(eos_cfg, list) and eos_cfg else eos_cfg
        self.eos_token_id = self._first(eos_token_id, eos_cfg, by_text(self.eos_token))
        if self.eos_token_id is None:
            raise ValueError(f"eos_token_id: not found in {path}; pass it")
        self.eot_token_id = self._first(eot_token_id, *(by_text(t) for t in EOT_CANDIDATES))

    @staticmethod
    def _first(*candidates):
        return next((int(c) for c in candidates if c is not None), None)

    @staticmethod
    def _read_json(file: Path) -> dict:
        return json.loads(file.read_text()) if file.is_file() else {}

    @staticmethod
    def _load(path: Path) -> HFTokenizer:
        if (path / "tokenizer.json").is_file():
            return HFTokenizer.from_file(str(path / "tokenizer.json"))
        vocab, merges = path / "vocab.json", path / "merges.txt"
        if not (vocab.is_file() and merges.is_file()):
            raise FileNotFoundError(f"{path}: no tokenizer.json (nor vocab.json + merges.txt)")
        tok = HFTokenizer(models.BPE.from_file(str(vocab), str(merges)))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        added = Tokenizer._read_json(path / "tokenizer_config.json").get("added_tokens_decoder", {})
        for _idx, spec in sorted(added.items(), key=lambda kv: int(kv[0])):
            tok.add_special_tokens([AddedToken(spec["content"], special=spec.get("special", True))])
        return tok

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def stop_token_ids(self) -> list[int]:
        return [t for t in (self.eos_token_id, self.eot_token_id) if t is not None]

    def encode(self, text: str, add_special_tokens: bool = False, parse_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`. `parse_special_tokens=False`: text that spells a special token (such as
        `<|eos|>`) is split like any other text instead of becoming that token (what a server does
        with a client's prompt; see EngineConfig.parse_special_tokens)."""
        tok = self._tok if parse_special_tokens else self._plain_text_tokenizer()
        return tok.encode(text, add_special_tokens=add_special_tokens).ids

    def _plain_text_tokenizer(self) -> HFTokenizer:
        # A copy with special-token matching off, made once: toggling the flag on the shared
        # tokenizer per call would race with other threads encoding.
        if self._plain is None:
            plain = HFTokenizer.from_str(self._tok.to_str())
            plain.encode_special_tokens = True
            self._plain = plain
        return self._plain

    @property
    def max_token_bytes(self) -> int:
        """The most UTF-8 bytes of text one token can stand for (at least 4, one character), an upper
        bound that lets a prompt be measured against the context before it is tokenized."""
        if self._max_token_bytes is None:
            vocab = self._tok.get_vocab(with_added_tokens=True)
            self._max_token_bytes = max([4, *(len(t.encode("utf-8")) for t in vocab)])
        return self._max_token_bytes

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """Render the checkpoint's chat template the way `transformers` does (sandboxed Jinja,
        trimmed blocks; backend/chat_template.py); without a template, the last user message is used as it is."""
        return chat_template.render(self.chat_template, messages, add_generation_prompt, self.bos_token,
                                    self.eos_token)
