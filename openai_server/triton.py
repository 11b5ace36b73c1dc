"""One generation over Triton's gRPC stream (`ModelStreamInfer`, `tritonclient.grpc.aio`), as a sequence
of `Update`s: per answer (n of them) the text that response adds, the finish reason once it is known,
its token count and log-probabilities.

Each generation has a stream of its own on one shared channel (an HTTP/2 stream: no new connection).
The stream starts with the header `triton_grpc_error: true`, so that an error arrives with its gRPC
status (INVALID_ARGUMENT, UNAVAILABLE, INTERNAL) instead of only a message (README: the vLLM contract).
The request side stays open until the final response has come, then closes, and Triton ends the call;
a consumer that stops early (its HTTP client went away) cancels the call, and Triton cancels the
request, which the engine aborts within one iteration (its K/V pages freed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio

from openai_server.errors import APIError, field_of, internal, invalid, unavailable

NOT_FINISHED = "None"  # the model's finish_reason before an answer has ended (vLLM's str(None))
FLAGS = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")


@dataclass
class AnswerNews:
    text: str = ""
    finish_reason: str | None = None  # "stop" / "length" on the response where the answer ends
    num_output_tokens: int = 0
    logprobs: list[dict] | None = None  # one {token_id: {logprob, rank, decoded_token}} per token


@dataclass
class Update:
    answers: list[AnswerNews]
    num_input_tokens: int | None = None
    final: bool = False


@dataclass
class TritonRequest:
    prompt: str
    sampling: dict = field(default_factory=dict)
    stream: bool = True
    logprobs: bool = False  # ask for the `logprobs` output

    def inputs(self) -> list:
        def tensor(name, value, dtype):
            t = grpcclient.InferInput(name, [1], dtype)
            t.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
            return t

        out = [tensor("text_input", self.prompt.encode("utf-8"), "BYTES"), tensor("stream", self.stream, "BOOL"),
               tensor("exclude_input_in_output", True, "BOOL")]
        out += [tensor(flag, True, "BOOL") for flag in FLAGS]
        if self.logprobs:
            out.append(tensor("return_logprobs", True, "BOOL"))
        if self.sampling:
            out.append(tensor("sampling_parameters", json.dumps(self.sampling).encode("utf-8"), "BYTES"))
        return out


class Triton:
    def __init__(self, url: str, model: str):
        self.url = url
        self.model = model
        self._client = grpcaio.InferenceServerClient(url)

    async def close(self) -> None:
        await self._client.close()

    async def model_ready(self) -> bool:
        try:
            return bool(await self._client.is_model_ready(self.model, client_timeout=2.0))
        except Exception:  # unreachable, or any failure of the call: not ready either way
            return False

    async def generate(self, request: TritonRequest) -> AsyncIterator[Update]:
        """The updates of one generation, the last with `final`. Raises APIError (400 / 500 / 503)."""
        closing = asyncio.Event()
        message = {"model_name": self.model, "inputs": request.inputs(),
                   # The empty final response tells us the stream is over even when the last data response
                   # did not carry the FINAL flag.
                   "parameters": {"triton_enable_empty_final_response": True}}

        async def requests():
            yield message
            await closing.wait()  # half-closing earlier would end the call before the answer

        call = self._client.stream_infer(requests(), headers={"triton_grpc_error": "true"})
        finished = False
        try:
            async for result, error in call:
                if error is not None:
                    raise _from_message(error.message())
                update = _update(result)
                finished = update.final
                yield update
                if finished:
                    break
            if not finished:
                raise internal("Triton ended the stream before the final response")
        except grpc.aio.AioRpcError as e:
            raise _from_status(e.code(), e.details() or "", self.url, self.model) from None
        finally:
            closing.set()
            if finished:  # let the call end on its own: a cancel now would reach a finished request
                try:
                    async for _ in call:
                        pass
                except grpc.aio.AioRpcError:
                    pass
            else:
                call.cancel()


def _texts(result, name: str) -> list[str] | None:
    arr = result.as_numpy(name)
    if arr is None:
        return None
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]


def _update(result) -> Update:
    params = result.get_response().parameters
    final = "triton_final_response" in params and params["triton_final_response"].bool_param
    texts = _texts(result, "text_output")
    if texts is None:  # the empty final response
        return Update([], None, final)
    reasons = _texts(result, "finish_reason") or [NOT_FINISHED] * len(texts)
    tokens = result.as_numpy("num_output_tokens")
    counts = [int(c) for c in tokens.reshape(-1)] if tokens is not None else [0] * len(texts)
    logprobs = _texts(result, "logprobs")
    answers = []
    for i, text in enumerate(texts):
        lp = json.loads(logprobs[i]) if logprobs is not None else None
        answers.append(AnswerNews(text, None if reasons[i] == NOT_FINISHED else reasons[i], counts[i], lp))
    prompt = result.as_numpy("num_input_tokens")
    return Update(answers, int(prompt.reshape(-1)[0]) if prompt is not None else None, final)


def _from_message(message: str) -> APIError:
    """An error that came as a message only (no gRPC status): the model's words say whose it was."""
    if message.startswith("request aborted"):
        return unavailable(message)
    if message.startswith("internal error"):
        return APIError(500, message)
    if field_of(message):
        return invalid(message)
    if "unknown model" in message or "is not ready" in message:
        return unavailable(f"the model is not ready on Triton: {message}")
    return APIError(500, f"internal error: Triton: {message}")


def _from_status(code: grpc.StatusCode, details: str, url: str, model: str) -> APIError:
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return invalid(details)
    if code == grpc.StatusCode.UNAVAILABLE and not details.startswith("request aborted"):
        return unavailable(f"Triton at {url} is unreachable: {details}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
        return unavailable(details)
    if code == grpc.StatusCode.NOT_FOUND or "unknown model" in details:
        return unavailable(f"model {model!r} is not ready on Triton at {url}: {details}")
    if details.startswith("internal error"):
        return APIError(500, details)
    return APIError(500, f"internal error: Triton answered {code.name}: {details}")
