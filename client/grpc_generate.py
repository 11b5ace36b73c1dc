"""Generate over gRPC with tritonclient: the model is decoupled, so every call goes through a
bidirectional stream, streaming or not. Deltas are handed to `on_delta` as they arrive."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable

import numpy as np

from client.result import (
    INTERRUPTED,
    TIMEOUT,
    UNREACHABLE,
    GenerateError,
    Generation,
    exit_code_for_message,
    exit_code_for_status,
)


def build_inputs(grpcclient, prompt: str, sampling: dict, stream: bool, exclude_input: bool = True) -> list:
    def tensor(name, value, dtype):
        t = grpcclient.InferInput(name, [1], dtype)
        t.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
        return t

    inputs = [tensor("text_input", prompt.encode("utf-8"), "BYTES"), tensor("stream", stream, "BOOL"),
              tensor("exclude_input_in_output", exclude_input, "BOOL")]
    for flag in ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens"):
        inputs.append(tensor(flag, True, "BOOL"))
    if sampling:
        inputs.append(tensor("sampling_parameters", json.dumps(sampling).encode("utf-8"), "BYTES"))
    return inputs


def _scalar(result, name):
    arr = result.as_numpy(name)
    return None if arr is None or arr.size == 0 else arr.reshape(-1)[0]


def generate(url: str, model: str, prompt: str, sampling: dict, stream: bool, exclude_input: bool = True,
             timeout: float | None = None, on_delta: Callable[[str], None] | None = None) -> Generation:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    try:
        try:
            ready = client.is_model_ready(model)
        except InferenceServerException as e:
            raise GenerateError(f"cannot reach the server at {url}: {e.message()}", UNREACHABLE) from None
        if not ready:
            raise GenerateError(f"model {model!r} is not ready on {url}", UNREACHABLE)
        events: queue.Queue = queue.Queue()
        client.start_stream(callback=lambda result, error: events.put((result, error)))
        out, start = Generation(), time.monotonic()
        try:
            # The empty final response tells us the stream is over even when the last data response
            # did not carry the FINAL flag.
            client.async_stream_infer(model, build_inputs(grpcclient, prompt, sampling, stream, exclude_input),
                                      enable_empty_final_response=True)
            while True:
                left = None if timeout is None else timeout - (time.monotonic() - start)
                if left is not None and left <= 0:
                    raise GenerateError(f"no complete answer within {timeout} s", TIMEOUT)
                try:
                    result, error = events.get(timeout=left)
                except queue.Empty:
                    continue
                if error is not None:
                    message = error.message() if hasattr(error, "message") else str(error)
                    status = getattr(error, "status", lambda: None)()
                    code = exit_code_for_status(status) if status else exit_code_for_message(message)
                    raise GenerateError(message, code)
                if _collect(result, out, start, on_delta):
                    break
        except KeyboardInterrupt:
            client.stop_stream(cancel_requests=True)  # the server aborts the request and frees its cache
            raise GenerateError("interrupted", INTERRUPTED) from None
        client.stop_stream()
        out.total_s = time.monotonic() - start
        return out
    finally:
        client.close()


def _collect(result, out: Generation, start: float, on_delta) -> bool:
    """Add one response to `out`; True when it was the last."""
    params = result.get_response().parameters
    final = "triton_final_response" in params and params["triton_final_response"].bool_param
    text = _scalar(result, "text_output")
    if text is not None:
        reason = _scalar(result, "finish_reason")
        out.add(text.decode("utf-8") if isinstance(text, bytes) else str(text), start, on_delta,
                reason.decode() if isinstance(reason, bytes) else reason,
                _scalar(result, "num_input_tokens"), _scalar(result, "num_output_tokens"))
    return final
