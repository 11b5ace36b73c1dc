"""Closed-loop clients for benchmarks/replicas.py: each client thread sends one request after another
(gRPC: on one stream of its own, as tritonclient users do; HTTP: Triton's `generate` endpoint), each
with a deadline, and records latency, output tokens, how many responses it arrived in, and how it
ended (ok, error, or no answer by the deadline: "hung")."""

from __future__ import annotations

import json
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient

DEADLINE_S = 60.0  # a request without its final response by then counts as hung
ERROR_PAUSE_S = 0.2  # a client's pause after an error before its next request


@dataclass
class Outcome:
    start: float
    seconds: float
    status: str  # ok | error | hung
    tokens: int = 0
    responses: int = 0
    text: str = ""
    error: str = ""


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)


def _inputs(prompt: str, sampling: dict) -> list:
    def tensor(name, value, dtype):
        t = grpcclient.InferInput(name, [1], dtype)
        t.set_data_from_numpy(np.array([value], dtype=np.object_ if dtype == "BYTES" else bool))
        return t

    return [tensor("text_input", prompt.encode(), "BYTES"), tensor("stream", True, "BOOL"),
            tensor("return_num_output_tokens", True, "BOOL"),
            tensor("sampling_parameters", json.dumps(sampling).encode(), "BYTES")]


class GrpcClient:
    """One stream; `generate` waits for the request's final response."""

    def __init__(self, url: str):
        self.client = grpcclient.InferenceServerClient(url)
        self.events: queue.Queue = queue.Queue()
        self.client.start_stream(callback=lambda result, error: self.events.put((result, error)))
        self.n = 0

    def generate(self, prompt: str, sampling: dict, deadline_s: float = DEADLINE_S,
                 on_first=None) -> Outcome:
        self.n += 1
        rid = f"r{self.n}"
        start = time.monotonic()
        self.client.async_stream_infer("dllm", _inputs(prompt, sampling), request_id=rid,
                                       enable_empty_final_response=True)
        text, tokens, responses = [], 0, 0
        while True:
            left = start + deadline_s - time.monotonic()
            try:
                result, error = self.events.get(timeout=max(left, 0.001))
            except queue.Empty:
                return Outcome(start, time.monotonic() - start, "hung", tokens, responses, "".join(text))
            if error is not None:
                return Outcome(start, time.monotonic() - start, "error", tokens, responses, "".join(text),
                               str(error)[:200])
            response = result.get_response()
            if response.id != rid:
                continue  # a late response of an earlier request that hung
            out = result.as_numpy("text_output")
            if out is not None:
                responses += 1
                text.append(out[0].decode("utf-8", errors="replace"))
                if on_first is not None and responses == 1:
                    on_first()
            n = result.as_numpy("num_output_tokens")
            if n is not None:
                tokens += int(n[0])
            if response.parameters["triton_final_response"].bool_param:
                return Outcome(start, time.monotonic() - start, "ok", tokens, responses, "".join(text))

    def close(self, cancel: bool = False) -> None:
        try:
            self.client.stop_stream(cancel_requests=cancel)
        finally:
            self.client.close()


def http_generate(url: str, prompt: str, sampling: dict, deadline_s: float = DEADLINE_S) -> Outcome:
    body = json.dumps({"text_input": prompt, "return_num_output_tokens": True, **sampling}).encode()
    request = urllib.request.Request(f"http://{url}/v2/models/dllm/generate", data=body,
                                     headers={"Content-Type": "application/json"})
    start = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=deadline_s) as resp:
            answer = json.loads(resp.read())
    except TimeoutError:
        return Outcome(start, time.monotonic() - start, "hung")
    except urllib.error.HTTPError as e:
        return Outcome(start, time.monotonic() - start, "error", error=f"HTTP {e.code}: {e.read()[:200]!r}")
    except (urllib.error.URLError, OSError) as e:
        status = "hung" if "timed out" in str(e) else "error"
        return Outcome(start, time.monotonic() - start, status, error=str(e)[:200])
    tokens = answer.get("num_output_tokens", 0)
    return Outcome(start, time.monotonic() - start, "ok", int(tokens[0] if isinstance(tokens, list) else tokens), 1,
                   answer.get("text_output", ""))


def closed_loop(protocol: str, url: str, clients: int, seconds: float, prompts: list[str], sampling: dict,
                at=None) -> Run:
    """`clients` threads sending requests for `seconds`; `at`: (second, action) run once then, meanwhile."""
    run = Run()
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        grpc = GrpcClient(url) if protocol == "grpc" else None
        i = index
        try:
            while time.monotonic() < stop_at:
                prompt = prompts[i % len(prompts)]
                i += clients
                outcome = grpc.generate(prompt, sampling) if grpc else http_generate(url, prompt, sampling)
                run.add(outcome)
                if outcome.status != "ok":
                    time.sleep(ERROR_PAUSE_S)  # as a client would, rather than spin on a refusing replica
                    if grpc is not None:  # the stream may be broken: a new one
                        grpc.close()
                        grpc = GrpcClient(url)
        finally:
            if grpc is not None:
                grpc.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    if at is not None:
        time.sleep(at[0])
        at[1]()
    for t in threads:
        t.join(seconds + DEADLINE_S + 30)
    return run


def summary(run: Run, seconds: float) -> dict:
    ok = [o for o in run.outcomes if o.status == "ok"]
    lat = sorted(o.seconds for o in ok)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 4) if lat else None

    return {"requests": len(run.outcomes), "ok": len(ok),
            "errors": sum(o.status == "error" for o in run.outcomes),
            "hung": sum(o.status == "hung" for o in run.outcomes),
            "requests_per_s": round(len(ok) / seconds, 3),
            "tokens_per_s": round(sum(o.tokens for o in ok) / seconds, 2),
            "p50_s": pct(0.5), "p95_s": pct(0.95),
            "error_samples": sorted({o.error for o in run.outcomes if o.error})[:3]}
