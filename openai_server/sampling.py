"""An OpenAI request as what the model takes: its sampling parameters (the vLLM backend's keys, the
dLLM's own settings passed through from `extra_body`) and whether to ask for log-probabilities.

Values are not range-checked here: the model checks every one and refuses a bad value naming its key,
which is the name the client used too (`temperature`, `top_p`, `n`, `seed`, ...); the few keys whose
OpenAI name differs from the model's are renamed back in the error (`rename_field`). What is checked
here is what the model never sees: OpenAI fields for features a text-only diffusion LM does not have.
"""

from __future__ import annotations

from openai_server.errors import invalid
from openai_server.protocol import ChatRequest, CompletionRequest

# Keys passed to the model under the same name when given.
SAME_NAME = ("temperature", "top_p", "n", "seed", "presence_penalty", "frequency_penalty")
_NO_TOOLS = "not supported: this server generates plain text (no tool or function calling)"
# field -> (the values that ask for nothing, why anything else is refused)
UNSUPPORTED = {
    "tools": ((None, []), _NO_TOOLS),
    "functions": ((None, []), _NO_TOOLS),
    "tool_choice": ((None, "none"), _NO_TOOLS),
    "function_call": ((None, "none"), _NO_TOOLS),
    "response_format": ((None, {"type": "text"}), "not supported: only {\"type\": \"text\"} (no structured output)"),
    "modalities": ((None, ["text"]), "not supported: only [\"text\"]"),
    "audio": ((None,), "not supported: the served models are text-only"),
    "prediction": ((None,), "not supported: a diffusion model has no use for predicted output"),
    "logit_bias": ((None, {}), "not supported: a bias would reweigh the logits of every position the "
                               "diffusion model fills in parallel; not implemented"),
    "suffix": ((None, ""), "not supported: the model continues a prompt, it does not fill in between"),
}


def _refuse_unsupported(req) -> None:
    for name, (nothing, why) in UNSUPPORTED.items():
        value = getattr(req, name, None)
        if value not in nothing:
            raise invalid(f"{name}: {why}")


def _common(req, max_tokens: int | None) -> dict:
    # The dLLM's settings first: a declared field always wins over an extra of the same name.
    sampling = dict(req.model_extra or {})
    for key in SAME_NAME:
        value = getattr(req, key)
        if value is not None:
            sampling[key] = value
    if max_tokens is not None:
        sampling["max_tokens"] = max_tokens
    if req.stop is not None:
        sampling["stop"] = [req.stop] if isinstance(req.stop, str) else req.stop
    return sampling


def chat_sampling(req: ChatRequest) -> tuple[dict, int | None]:
    """(sampling parameters, k of `logprobs` or None when not asked)."""
    _refuse_unsupported(req)
    sampling = _common(req, req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens)
    k = None
    if req.logprobs:
        k = req.top_logprobs or 0
        if k < 0:
            raise invalid(f"top_logprobs: must be >= 0, got {k}")
        sampling["logprobs"] = k
    elif req.top_logprobs is not None:
        raise invalid("top_logprobs: needs logprobs: true")
    return sampling, k


def completion_sampling(req: CompletionRequest) -> tuple[dict, int | None]:
    _refuse_unsupported(req)
    sampling = _common(req, req.max_tokens)
    if req.best_of is not None:
        sampling["best_of"] = req.best_of
    k = req.logprobs
    if k is not None:
        if k < 0:
            raise invalid(f"logprobs: must be >= 0, got {k}")
        sampling["logprobs"] = k
    return sampling, k


def rename_field(message: str, req) -> str:
    """The model's error, with the field named as the client named it: the prompt is `text_input` to
    the model, `messages` / `prompt` here; `max_tokens` may have come as `max_completion_tokens`, a chat's
    `logprobs` k as `top_logprobs`."""
    if message.startswith("text_input:"):
        return ("messages" if isinstance(req, ChatRequest) else "prompt") + message[len("text_input"):]
    if message.startswith("max_tokens:") and getattr(req, "max_completion_tokens", None) is not None:
        return "max_completion_tokens" + message[len("max_tokens"):]
    if message.startswith("logprobs:") and isinstance(req, ChatRequest) and req.top_logprobs is not None:
        return "top_logprobs" + message[len("logprobs"):]  # a chat's k is its top_logprobs
    return message
