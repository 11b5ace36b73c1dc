"""Client calls the integration tests make: gRPC streams, HTTP generate(_stream), metrics scrapes."""

from __future__ import annotations

import json
import queue
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient


@dataclass
class StreamResult:
    deltas: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    num_output_tokens: list[int] = field(default_factory=list)
    error: str | None = None
    finals: int = 0  # responses that carried the FINAL flag (with data or empty)

    @property
    def text(self) -> str:
        return "".join(self.deltas)


def grpc_inputs(prompt: str | bytes | None, sampling: dict | str | None = None, **flags) -> list:
    def tensor(name, value, dtype):
        t = grpcclient.InferInput(name, [1], dtype)
        t.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
        return t

    inputs = []
    if prompt is not None:
        inputs.append(tensor("text_input", prompt.encode() if isinstance(prompt, str) else prompt, "BYTES"))
    for name, value in flags.items():
        inputs.append(tensor(name, bool(value), "BOOL"))
    if sampling is not None:
        text = sampling if isinstance(sampling, str) else json.dumps(sampling)
        inputs.append(tensor("sampling_parameters", text.encode(), "BYTES"))
    return inputs


class GrpcStreams:
    """One gRPC stream carrying any number of requests; responses are sorted by request id."""

    def __init__(self, url: str):
        self.client = grpcclient.InferenceServerClient(url)
        self.events: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.events.put((result, error)))
        self.results: dict[str, StreamResult] = {}

    def send(self, request_id: str, inputs: list, parameters: dict | None = None, model: str = "dllm") -> None:
        """`parameters`: gRPC request parameters (typed values, as a client library sends them)."""
        self.results[request_id] = StreamResult()
        self.client.async_stream_infer(model, inputs, request_id=request_id, enable_empty_final_response=True,
                                       parameters=parameters)

    def next_event(self, timeout: float = 60.0) -> tuple[str, bool]:
        """Handle one response; returns (request id, whether it was that request's last)."""
        result, error = self.events.get(timeout=timeout)
        if error is not None:
            # Errors come without the request id on a stream when the server rejects the request
            # before the model sees it; tests using errors send one request at a time.
            rid = error.request_id() if hasattr(error, "request_id") else None
            rid = rid or next(iter(r for r, v in self.results.items() if v.error is None and not v.finals))
            self.results[rid].error = error.message()
            self.results[rid].finals += 1
            return rid, True
        response = result.get_response()
        rid = response.id
        res = self.results[rid]
        final = response.parameters["triton_final_response"].bool_param
        text = result.as_numpy("text_output")
        if text is not None:
            res.deltas.append(text[0].decode("utf-8"))
            reason = result.as_numpy("finish_reason")
            if reason is not None and reason[0]:
                res.finish_reason = reason[0].decode()
            n = result.as_numpy("num_output_tokens")
            if n is not None:
                res.num_output_tokens.append(int(n[0]))
        if final:
            res.finals += 1
        return rid, final

    def wait_all(self, timeout: float = 120.0) -> dict[str, StreamResult]:
        pending = {rid for rid, r in self.results.items() if not r.finals}
        while pending:
            rid, final = self.next_event(timeout)
            if final:
                pending.discard(rid)
        return self.results

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def grpc_generate(url: str, prompt, sampling=None, stream: bool = True, model: str = "dllm", **flags) -> StreamResult:
    streams = GrpcStreams(url)
    try:
        flags.setdefault("return_finish_reason", True)
        flags.setdefault("return_num_output_tokens", True)
        streams.send("one", grpc_inputs(prompt, sampling, stream=stream, **flags), model=model)
        return streams.wait_all()["one"]
    finally:
        streams.close()


def http_post(url: str, path: str, body: dict | bytes, timeout: float = 120.0) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{url}{path}", data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sse_events(body: str) -> list[dict]:
    return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]


def scrape_metrics(metrics_port: int) -> dict[str, float]:
    """`name{labels}` -> value for the dllm: metrics (histograms as _count/_sum/_bucket lines)."""
    with urllib.request.urlopen(f"http://localhost:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(dllm:[^\s{]+)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metric(metrics: dict[str, float], name: str, **labels) -> float:
    """Sum of the series of `name` whose labels include `labels`."""
    total = 0.0
    for key, value in metrics.items():
        base, _, rest = key.partition("{")
        if base == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


def wait_for(predicate, timeout: float, what: str):
    """Poll `predicate` until it is truthy (its value is returned) or fail after `timeout` seconds.
    The metrics are updated by the response thread after the final response goes out, so a client
    can read them a moment before they show its request."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)
