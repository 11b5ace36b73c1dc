"""Chat messages as the model's prompt: the checkpoint's chat template (backend/chat_template.py, the same
sandboxed rendering the engine's tokenizer uses), over messages whose content is plain text."""

from __future__ import annotations

import logging
from pathlib import Path

from jinja2 import TemplateError

from backend.chat_template import ChatTemplate
from openai_server.errors import APIError, invalid
from openai_server.protocol import Message

log = logging.getLogger(__name__)


def _text(i: int, message: Message) -> str:
    content = message.content
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for j, part in enumerate(content):
        if part.type != "text" or part.text is None:
            raise invalid(f"messages[{i}].content[{j}].type: {part.type!r} is not supported: the served model "
                          "reads text parts only")
        texts.append(part.text)
    return "\n".join(texts)  # as vLLM joins a message's text parts


class ChatPrompt:
    def __init__(self, tokenizer_dir: str | Path):
        self.template = ChatTemplate(tokenizer_dir)
        if not self.template.template:
            log.warning("%s has no chat template: a chat's prompt is its last message as it is", tokenizer_dir)

    def render(self, messages: list[Message]) -> str:
        if not messages:
            raise invalid("messages: at least one message is needed")
        plain = [{**m.model_dump(exclude_none=True), "content": _text(i, m)} for i, m in enumerate(messages)]
        try:
            return self.template.render(plain)
        except ValueError as e:  # the template's raise_exception: the messages do not fit it
            raise invalid(f"messages: {e}") from None
        except TemplateError as e:
            raise APIError(500, f"internal error: the chat template failed: {type(e).__name__}: {e}") from None
