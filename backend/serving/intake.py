"""From a Triton request to what the engine takes: parsed inputs, prompt token ids, validated
sampling parameters. Every client mistake raises `InvalidInput` (a ValueError whose message starts
with the field's name); any other exception is our failure, and the caller answers it as INTERNAL.

The prompt is measured before it is tokenized: a prompt whose bytes cannot fit the context (each
token stands for at most `max_token_bytes` bytes of text) is refused at once, so that a 10 MB prompt
costs a length check, not a tokenization.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from backend.engine.sampling_params import SamplingParams
from backend.serving.inputs import GenerateRequest, InvalidInput, parse_request
from backend.serving.vllm_keys import ServingKeys, take_serving_keys

# A client error names its field first ("max_tokens: ..."); a ValueError without that shape comes
# from somewhere we did not expect and is treated as our failure.
_FIELD_FIRST = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}: |^'.*': |^\".*\": ")
# The engine calls the prompt "prompt"; the client sent it as `text_input`.
_ENGINE_PROMPT = "prompt: "


@dataclass(frozen=True)
class PromptLimits:
    context: int  # positions of the model's context (prompt + generation)
    max_token_bytes: int  # most bytes of text one token stands for

    @property
    def max_prompt_bytes(self) -> int:
        # Twice the exact bound: a tokenizer's normalizer may shrink text before it is split.
        return 2 * (self.context - 1) * self.max_token_bytes


@dataclass
class Prepared:
    request: GenerateRequest
    prompt_ids: list[int]
    params: SamplingParams
    engine_request: object = None  # what the engine's `validate` built: handed to the engine as it is
    keys: ServingKeys = None  # n, skip_special_tokens
    engine_requests: list = None  # one per answer (n of them); engine_request is the first


class Intake:
    def __init__(self, encode: Callable[[str], list[int]], make_params: Callable[[dict], SamplingParams],
                 validate: Callable[[list[int], SamplingParams], object], limits: PromptLimits):
        """`encode`: prompt text to ids; `make_params`: the engine's SamplingParams over its defaults;
        `validate`: the engine's admission check (a ValueError naming the field)."""
        self._encode = encode
        self._make_params = make_params
        self._validate = validate
        self.limits = limits

    def prepare(self, get_input: Callable[[str], object], parameters_json: str = "") -> Prepared:
        req = parse_request(get_input, parameters_json, self.limits.max_prompt_bytes)
        sampling = dict(req.sampling)
        keys = _client_errors(take_serving_keys, sampling)
        if req.return_cumulative_logprob and sampling.get("logprobs") is None:
            sampling["logprobs"] = 0  # the committed tokens' own log-probabilities, for their sum
        params = _client_errors(self._make_params, sampling)
        prompt_ids = self._encode(req.prompt)
        requests = [_client_errors(self._validate, prompt_ids, params)]
        for seed in keys.seeds(params.seed)[1:]:  # answers 2..n: the same request but for its seed
            requests.append(_client_errors(self._validate, prompt_ids,
                                           _client_errors(self._make_params, {**sampling, "seed": seed})))
        return Prepared(req, prompt_ids, params, requests[0], keys, requests)


def names_a_field(message: str) -> bool:
    """Whether an error message has a client error's shape: the field's name first."""
    return _FIELD_FIRST.match(message) is not None


def _client_errors(fn, *args):
    """Run a validation step: its ValueErrors that name a field are the client's (InvalidInput)."""
    try:
        return fn(*args)
    except ValueError as e:
        message = str(e)
        if not names_a_field(message):
            raise RuntimeError(f"validation failed without naming a field: {message}") from e
        if message.startswith(_ENGINE_PROMPT):
            message = "text_input: " + message[len(_ENGINE_PROMPT):]
        raise InvalidInput(message) from None
