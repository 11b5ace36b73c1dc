"""What a request to `/v1/chat/completions` and `/v1/completions` may hold, as pydantic models.

The responses are the `openai` package's own pydantic types (`openai.types`); its request types are
TypedDicts for a client to build, with no validation of their own, so the requests are declared here
with the fields of OpenAI's API that mean something for this server. Keys that are not declared
(`extra="allow"`) are the dLLM's own settings (`block_length`, `steps`, `threshold`, `sparse_retention`,
`top_k`, `min_tokens`, ...: the `openai` client's `extra_body`); they go to the model as sampling
parameters, and the model refuses a key it does not know by its name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool | None = None
    include_obfuscation: bool | None = None  # OpenAI's padding against side channels: no meaning here


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # Accepted and not used: they identify or route the request at OpenAI, they do not change the answer.
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatRequest(_Common):
    messages: list[Message]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # Chat features a diffusion LM served here has no part of: refused by name when given (sampling.py).
    tools: list | None = None
    tool_choice: str | dict | None = None
    functions: list | None = None
    function_call: str | dict | None = None
    response_format: dict | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[str] | None = None
    audio: dict | None = None
    prediction: dict | None = None


class CompletionRequest(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None
