"""Parse one Triton request (the vLLM backend's I/O convention) into a `GenerateRequest`.

Independent of Triton: the caller passes a getter for input tensors (numpy arrays) and the request's
parameters as the JSON string Triton gives. Every problem raises `InvalidInput` whose message starts
with the offending field's name; the adapter turns it into an INVALID_ARG error.

Sampling parameters come from two places, merged in this order (later wins):
1. request parameters: how Triton's `generate` endpoint passes JSON keys that are not input names, and
   how gRPC clients pass `parameters=`;
2. the `sampling_parameters` input: a JSON object (values may be strings).
The boolean inputs (`stream`, `exclude_input_in_output`, ...) may also come as request parameters,
so `{"text_input": ..., "parameters": {"stream": true}}` works too. A null value is the same as
leaving the key out.

Sizes are checked before any work that grows with them: the prompt's bytes before it is decoded
(the caller passes the limit: what the model's context can hold), JSON text before it is parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from backend.engine.param_parsing import parse_json_object, show

# Longest JSON text read from `sampling_parameters` or the request parameters: sampling parameters
# hold a dozen scalars and at most 16 stop strings of 256 characters.
MAX_JSON_CHARS = 64 * 1024
FLAG_INPUTS = ("stream", "exclude_input_in_output", "return_finish_reason", "return_num_input_tokens",
               "return_num_output_tokens", "return_logprobs", "return_cumulative_logprob", "return_finish_detail")
# Inputs the vLLM backend declares for features this model does not have: declared in config.pbtxt
# so that Triton never refuses a vLLM client's request itself (on a gRPC stream that is the 2.51
# shutdown hazard the README describes), and refused here by name.
UNSUPPORTED_INPUTS = {
    "image": "images are not supported: the served models are text-only",
    "embedding_request": "embeddings are not supported: a diffusion LLM here only generates text",
}


class InvalidInput(ValueError):
    """A client error; the message starts with the field's name."""


@dataclass
class GenerateRequest:
    prompt: str
    stream: bool = False
    # vLLM's default: a non-streaming response repeats the prompt before the generated text.
    exclude_input_in_output: bool = False
    return_finish_reason: bool = False
    return_num_input_tokens: bool = False
    return_num_output_tokens: bool = False
    return_logprobs: bool = False
    return_cumulative_logprob: bool = False
    return_finish_detail: bool = False  # ours: eos / stop_string / length, the detail vLLM's "stop" hides
    sampling: dict = field(default_factory=dict)  # raw values; the engine validates them


def _single(name: str, arr) -> object:
    arr = np.asarray(arr)
    if arr.size != 1:
        raise InvalidInput(f"{name}: expected exactly one element, got shape {list(arr.shape)}")
    return arr.reshape(-1)[0]


def _text(name: str, value, max_bytes: int | None = None) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        value = bytes(value)
        if max_bytes is not None and len(value) > max_bytes:
            raise InvalidInput(f"{name}: {len(value)} bytes exceed the limit of {max_bytes}")
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{name}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    if isinstance(value, str):
        if max_bytes is not None and len(value) > max_bytes // 4 and len(value.encode("utf-8")) > max_bytes:
            raise InvalidInput(f"{name}: {len(value.encode('utf-8'))} bytes exceed the limit of {max_bytes}")
        return value
    raise InvalidInput(f"{name}: expected a string (BYTES), got {type(value).__name__}")


def _flag(name: str, value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return bool(value)
    raise InvalidInput(f"{name}: expected a boolean, got {show(value)}")


def _json_object(name: str, text: str) -> dict:
    try:
        return parse_json_object(name, text, MAX_JSON_CHARS)
    except ValueError as e:
        raise InvalidInput(str(e)) from None


def parse_request(get_input: Callable[[str], np.ndarray | None], parameters_json: str = "",
                  max_prompt_bytes: int | None = None) -> GenerateRequest:
    """`get_input(name)` returns the input's numpy array or None when the client did not send it.
    `max_prompt_bytes`: longer prompts are refused before they are decoded."""
    raw = get_input("text_input")
    if raw is None:
        raise InvalidInput("text_input: missing (a BYTES tensor holding the prompt)")
    for name, why in UNSUPPORTED_INPUTS.items():
        if get_input(name) is not None:
            raise InvalidInput(f"{name}: {why}")
    prompt = _text("text_input", _single("text_input", raw), max_prompt_bytes)
    if not prompt:
        raise InvalidInput("text_input: empty prompt")

    sampling = _json_object("parameters", parameters_json or "")
    flags = {}
    for name in FLAG_INPUTS:
        arr = get_input(name)
        if arr is not None:
            flags[name] = _flag(name, _single(name, arr))
        elif sampling.get(name) is not None:
            flags[name] = _flag(name, sampling[name])
        sampling.pop(name, None)

    sp = get_input("sampling_parameters")
    if sp is not None:
        text = _text("sampling_parameters", _single("sampling_parameters", sp), MAX_JSON_CHARS)
        sampling.update(_json_object("sampling_parameters", text))
    req = GenerateRequest(prompt=prompt, sampling=sampling, **flags)
    if req.stream and flags.get("exclude_input_in_output") is False:
        raise InvalidInput("exclude_input_in_output: must be true (or unset) when streaming; "
                           "streamed deltas never repeat the prompt")
    if req.stream:
        req.exclude_input_in_output = True
    return req
