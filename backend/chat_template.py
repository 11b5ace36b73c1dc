"""A checkpoint's chat template: found in its tokenizer files and rendered the way `transformers`
renders it (sandboxed Jinja, trimmed blocks). Imports nothing heavy (no torch), so that processes
that only render prompts, such as the OpenAI-compatible server, need not load the model's stack;
`backend.models.tokenizer.Tokenizer` renders through the same functions."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path


def _token_text(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def template_from_config(path: Path, tokenizer_config: dict) -> str | None:
    """The template of the checkpoint at `path`: `chat_template.jinja` beside it wins over the
    `chat_template` of tokenizer_config.json (a string, or a list of named templates: "default")."""
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    tmpl = tokenizer_config.get("chat_template")
    if isinstance(tmpl, list):  # [{"name": "default", "template": ...}, ...]
        tmpl = next((t["template"] for t in tmpl if t.get("name") == "default"), tmpl[0]["template"])
    return tmpl


def render(template: str | None, messages: list[dict], add_generation_prompt: bool = True,
           bos_token: str | None = None, eos_token: str | None = None) -> str:
    """The prompt for `messages`; without a template, the last message's content as it is. A template
    that calls `raise_exception(msg)` raises ValueError("chat template: msg")."""
    if not template:
        return messages[-1]["content"]
    return _compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                      bos_token=bos_token or "", eos_token=eos_token or "")


def _raise_exception(msg):
    raise ValueError(f"chat template: {msg}")


@lru_cache(maxsize=8)
def _compiled(template: str):
    """Compiling a template costs milliseconds, rendering a compiled one microseconds: a server renders
    one template for every chat, so each is compiled once."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(template)


class ChatTemplate:
    """The template and special tokens of one checkpoint directory, read once."""

    def __init__(self, path: str | Path):
        path = Path(path)
        file = path / "tokenizer_config.json"
        config = json.loads(file.read_text()) if file.is_file() else {}
        self.template = template_from_config(path, config)
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return render(self.template, messages, add_generation_prompt, self.bos_token, self.eos_token)
