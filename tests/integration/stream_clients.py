"""Clients that keep streaming until told to stop, accounting for every request they send: one gRPC stream
carrying request after request (as chat front ends and load generators do), and HTTP SSE.

The gRPC client talks to Triton's stream directly (grpcio with tritonclient's messages) rather than
through tritonclient's InferenceServerClient, whose stream callback drops the request id of error
responses: here every response, refusals included, is matched to its request, so "exactly one final
response per request" is checked, not inferred from counts.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import grpc
from tritonclient.grpc import service_pb2_grpc
from tritonclient.grpc._utils import _get_inference_request
from tritonclient.utils import deserialize_bytes_tensor

from tests.integration.calls import grpc_inputs, sse_events

ERROR_PAUSE_S = 0.2  # after an error the client waits this long, then sends its next request


@dataclass
class Ledger:
    """What every request got. `finals[rid]`: how many final responses it received."""
    sent: list[str] = field(default_factory=list)
    finals: dict[str, int] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    prompts: dict[str, str] = field(default_factory=dict)  # request id -> its prompt
    expected: dict[str, str] = field(default_factory=dict)  # request id -> the text it must get
    problems: list[str] = field(default_factory=list)  # client-side failures (a stream broke, a timeout)

    def done(self) -> list[str]:
        return [rid for rid in self.sent if rid not in self.errors and self.finals.get(rid) == 1]


class GrpcStreamClient:
    """One gRPC stream for the client's whole life, with `depth` requests in flight on it: the next one
    goes out as soon as a final response arrives (ERROR_PAUSE_S after an error). `knock()` sends one
    more at once, whatever is in flight on the stream; while `echo` is set, so does every response
    with data (a request that reaches the server just as that response's write completes: what
    tripped Triton 2.51). `prompts`: (prompt, sampling, expected text), taken in turn."""

    def __init__(self, url: str, name: str, prompts: list[tuple[str, dict, str]], ledger: Ledger, depth: int = 1):
        self.name, self.prompts, self.ledger, self.depth = name, prompts, ledger, depth
        self._channel = grpc.insecure_channel(url)
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._finals: queue.SimpleQueue = queue.SimpleQueue()  # one entry per final: whether it was an error
        self._lock = threading.Lock()
        self._outstanding = 0
        self._n = 0
        self.stop = threading.Event()
        self.echo = threading.Event()
        self._responses = service_pb2_grpc.GRPCInferenceServiceStub(self._channel).ModelStreamInfer(self._requests())
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._writer = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> GrpcStreamClient:
        self._reader.start()
        self._writer.start()
        return self

    def knock(self) -> None:
        self._send()

    def join(self, timeout: float) -> bool:
        """After `stop` is set: wait for every request's final response, then close the stream."""
        self._writer.join(timeout)
        self._outbox.put(None)  # ends the request iterator: the client's half-close
        self._reader.join(10)
        self._channel.close()
        return not self._writer.is_alive()

    def _requests(self):
        while (request := self._outbox.get()) is not None:
            yield request

    def _send(self) -> None:
        with self._lock:
            self._n += 1
            prompt, sampling, want = self.prompts[self._n % len(self.prompts)]
            rid = f"{self.name}-{self._n}"
            self._outstanding += 1
            self.ledger.sent.append(rid)
            self.ledger.prompts[rid], self.ledger.expected[rid] = prompt, want
        inputs = grpc_inputs(prompt, sampling, stream=True)
        request = _get_inference_request("dllm", inputs, "", rid, None, 0, False, False, 0, None, None)
        request.parameters["triton_enable_empty_final_response"].bool_param = True
        self._outbox.put(request)

    def _loop(self) -> None:
        while not self.stop.is_set():
            while self._outstanding < self.depth:
                self._send()
            try:
                error = self._finals.get(timeout=180)
            except queue.Empty:
                self.ledger.problems.append(f"{self.name}: no final response within 180 s")
                return
            if error:
                time.sleep(ERROR_PAUSE_S)
        end = time.monotonic() + 180
        while self._outstanding and time.monotonic() < end:
            time.sleep(0.05)
        if self._outstanding:
            self.ledger.problems.append(f"{self.name}: {self._outstanding} requests never got a final response")

    def _read(self) -> None:
        try:
            for response in self._responses:
                self._on_response(response)
        except grpc.RpcError as e:
            if not (self.stop.is_set() and self._outstanding == 0):
                self.ledger.problems.append(f"{self.name}: stream broke: {e.code()} {e.details()}")

    def _on_response(self, response) -> None:
        r = response.infer_response
        rid, led = r.id, self.ledger
        # Errors are final: Triton's own refusals carry no final flag, only the request's id.
        final = bool(response.error_message) or r.parameters["triton_final_response"].bool_param
        if response.error_message:
            led.errors[rid] = response.error_message
        elif self.echo.is_set():
            self._send()
        for i, out in enumerate(r.outputs):
            if out.name == "text_output":
                text = deserialize_bytes_tensor(r.raw_output_contents[i])[0].decode()
                led.texts[rid] = led.texts.get(rid, "") + text
        if final:
            led.finals[rid] = led.finals.get(rid, 0) + 1
            with self._lock:
                self._outstanding -= 1
            self._finals.put(bool(response.error_message))


class SseClient:
    """HTTP `generate_stream`, one request after another on fresh connections."""

    def __init__(self, url: str, name: str, prompt: str, sampling: dict, want: str, ledger: Ledger):
        self.url, self.name, self.ledger = url, name, ledger
        self.prompt = prompt
        self.body = json.dumps({"text_input": prompt, "stream": True, "parameters": sampling}).encode()
        self.want = want
        self.stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> SseClient:
        self._thread.start()
        return self

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        n, led = 0, self.ledger
        while not self.stop.is_set():
            n += 1
            rid = f"{self.name}-{n}"
            led.sent.append(rid)
            led.prompts[rid], led.expected[rid] = self.prompt, self.want
            req = urllib.request.Request(f"http://{self.url}/v2/models/dllm/generate_stream", data=self.body)
            try:
                with urllib.request.urlopen(req, timeout=180) as resp:
                    events = sse_events(resp.read().decode())
            except urllib.error.HTTPError as e:  # refused before streaming: a JSON error body
                text = e.read().decode()
                events = sse_events(text) or [json.loads(text)]
            except Exception as e:  # no answer at all: recorded, and this client stops
                led.problems.append(f"{rid}: {e!r}")
                return
            led.finals[rid] = 1  # the response ended: the SSE stream's end is its final
            error = next((e["error"] for e in events if "error" in e), None)
            if error is not None:
                led.errors[rid] = error
                time.sleep(ERROR_PAUSE_S)
            else:
                led.texts[rid] = "".join(e.get("text_output", "") for e in events)
