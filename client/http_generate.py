"""Generate over Triton's HTTP `generate` / `generate_stream` (Server-Sent Events) endpoints, with the
standard library only. Sampling parameters travel as request parameters, as curl users send them."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from client.result import INTERRUPTED, TIMEOUT, UNREACHABLE, GenerateError, Generation, exit_code_for_status


def request_body(prompt: str, sampling: dict, stream: bool, exclude_input: bool = True) -> dict:
    return {"text_input": prompt, "stream": stream, "exclude_input_in_output": exclude_input,
            "return_finish_reason": True, "return_num_input_tokens": True, "return_num_output_tokens": True,
            "parameters": sampling}


def _base(url: str) -> str:
    return url if url.startswith(("http://", "https://")) else f"http://{url}"


def generate(url: str, model: str, prompt: str, sampling: dict, stream: bool, exclude_input: bool = True,
             timeout: float | None = None, on_delta: Callable[[str], None] | None = None) -> Generation:
    endpoint = f"{_base(url)}/v2/models/{model}/{'generate_stream' if stream else 'generate'}"
    data = json.dumps(request_body(prompt, sampling, stream, exclude_input)).encode("utf-8")
    req = urllib.request.Request(endpoint, data=data, headers={"Content-Type": "application/json"})
    out, start = Generation(), time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if stream:
                for event in _sse_events(resp):
                    _collect(event, out, start, on_delta)
            else:
                _collect(json.loads(resp.read()), out, start, on_delta)
    except urllib.error.HTTPError as e:
        raise GenerateError(_error_text(e), exit_code_for_status(e.code)) from None
    except urllib.error.URLError as e:
        raise GenerateError(f"cannot reach the server at {url}: {e.reason}", UNREACHABLE) from None
    except TimeoutError:
        raise GenerateError(f"no complete answer within {timeout} s", TIMEOUT) from None
    except KeyboardInterrupt:  # closing the connection makes Triton cancel the request
        raise GenerateError("interrupted", INTERRUPTED) from None
    out.total_s = time.monotonic() - start
    return out


def _error_text(e: urllib.error.HTTPError) -> str:
    body = e.read().decode("utf-8", "replace").strip()
    try:  # JSON, or one SSE event for generate_stream
        return json.loads(body.removeprefix("data:"))["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {e.code}: {body or e.reason}"


def _sse_events(resp):
    """The JSON payload of each `data:` line of an event stream."""
    for raw in resp:
        line = raw.decode("utf-8").strip()
        if line.startswith("data:"):
            yield json.loads(line[len("data:"):])


def _collect(event: dict, out: Generation, start: float, on_delta) -> None:
    if "error" in event:
        # A failure after the stream started (an invalid request is refused with HTTP 400 before).
        raise GenerateError(event["error"], exit_code_for_status(500))
    out.add(event.get("text_output", ""), start, on_delta, event.get("finish_reason"), event.get("num_input_tokens"),
            event.get("num_output_tokens", 0))
