"""Explicit model control: only a client with the admin key may unload or load; under streaming
traffic the model unloads and loads again, cycle after cycle, without a crash; every request either
completes with the right answer or gets one clean error; the old instance's metric series go."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.calls import grpc_generate, metric, scrape_metrics, sse_events

SAMPLING = {"max_tokens": 16, "block_length": 16, "steps": 16}
TRAFFIC = {"max_tokens": 32, "block_length": 8, "steps": 32}
# Outlasts a model load (seconds on a CPU): the old instance is still draining this stream, metric
# series and all, while its successor loads and serves (Triton loads the new instance beside the
# unloading one).
LONG = {"max_tokens": 256, "block_length": 8, "steps": 256, "ignore_eos": True}
CYCLES = 3
# What a request may get instead of its answer while the model is swapped (Triton's own refusals
# and ours while unloading): nothing else.
TRANSITION_ERRORS = ("unknown model", "no available versions", "model is unloading", "is not ready",
                     "not found")


def test_admin_apis_need_the_key(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("dllm")
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_repository_index()
        assert client.is_model_ready("dllm")
    finally:
        client.close()
    request = urllib.request.Request(f"http://{server.http_url}/v2/repository/models/dllm/unload", data=b"{}")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=10)
    assert e.value.code == 403


class Traffic:
    """Clients streaming one request after another (gRPC and HTTP SSE) until stopped."""

    def __init__(self, server, expected, grpc_clients: int = 3, http_clients: int = 1):
        self.server, self.answers, self.sampling = server, {}, {}
        self.done, self.errors, self.unexpected = [], [], []
        self._stop = threading.Event()
        prompts = [f"{10 + i}+{20 + i}=" for i in range(grpc_clients + http_clients)] + ["copy abcdefgh ="]
        for p in prompts:
            self.sampling[p] = LONG if p.startswith("copy") else TRAFFIC
            self.answers[p] = expected(p, **self.sampling[p])
        self._threads = [threading.Thread(target=self._http if grpc_clients <= i < len(prompts) - 1 else self._grpc,
                                          args=(p,), daemon=True) for i, p in enumerate(prompts)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(120)
        assert not any(t.is_alive() for t in self._threads), "a client never got its final response"

    def _record(self, prompt: str, text: str | None, error: str | None, finals: int) -> None:
        if error is not None:
            (self.errors if any(m in error for m in TRANSITION_ERRORS) else self.unexpected).append(error)
            time.sleep(0.2)  # the model is away: do not spin
        elif finals != 1 or text != self.answers[prompt]:
            self.unexpected.append(f"{prompt}: {text!r} with {finals} finals")
        else:
            self.done.append(prompt)

    def _grpc(self, prompt: str) -> None:
        while not self._stop.is_set():
            try:
                res = grpc_generate(self.server.grpc_url, prompt, self.sampling[prompt], stream=True)
            except Exception as e:  # no answer at all (a hung server): recorded, not swallowed
                self.unexpected.append(f"{prompt}: {e!r}")
                return
            self._record(prompt, res.text, res.error, res.finals)

    def _http(self, prompt: str) -> None:
        try:
            self._http_loop(prompt)
        except Exception as e:
            self.unexpected.append(f"{prompt}: {e!r}")

    def _http_loop(self, prompt: str) -> None:
        body = {"text_input": prompt, "stream": True, "parameters": self.sampling[prompt]}
        while not self._stop.is_set():
            req = urllib.request.Request(f"http://{self.server.http_url}/v2/models/dllm/generate_stream",
                                         data=json.dumps(body).encode())
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    events = sse_events(resp.read().decode())
            except urllib.error.HTTPError as e:  # refused before streaming: a JSON error body
                body_text = e.read().decode()
                events = sse_events(body_text) or [json.loads(body_text)]
            error = next((e["error"] for e in events if "error" in e), None)
            text = "".join(e.get("text_output", "") for e in events)
            self._record(prompt, text, error, 1)


def _cycle(server, protocol: str) -> None:
    # Time limits everywhere: a server whose heap got corrupted hangs instead of exiting.
    if protocol == "grpc":
        client = grpcclient.InferenceServerClient(server.grpc_url)
        timeout = {"client_timeout": 120}
    else:
        client = httpclient.InferenceServerClient(server.http_url, connection_timeout=120, network_timeout=120)
        timeout = {}
    try:
        client.unload_model("dllm", headers=server.admin(protocol), **timeout)
        end = time.monotonic() + 60
        while client.is_model_ready("dllm"):
            assert time.monotonic() < end, "the model did not unload:\n" + server.log()[-3000:]
            time.sleep(0.2)
        client.load_model("dllm", headers=server.admin(protocol), **timeout)  # returns once loaded
        assert client.is_model_ready("dllm")
    finally:
        client.close()


def _assert_alive(server) -> None:
    log = server.log()
    crashed = any(m in log for m in ("Signal (6)", "Signal (11)", "ASSERTION FAILED", "corrupt", "double free"))
    assert server.proc.poll() is None and not crashed, "tritonserver crashed:\n" + log[-5000:]


def test_unload_and_load_cycles_under_streaming_traffic(server, expected):
    unloads = server.log().count("successfully unloaded 'dllm'")
    with Traffic(server, expected) as traffic:
        time.sleep(2)  # streams in flight before the first unload
        for i in range(CYCLES):
            _cycle(server, "grpc" if i % 2 == 0 else "http")
            time.sleep(1.5)
            _assert_alive(server)
    assert not traffic.unexpected, traffic.unexpected[:5]
    assert len(traffic.done) >= 8, (len(traffic.done), traffic.errors[:5])
    assert "copy abcdefgh =" in traffic.done  # a long stream lived through a swap
    end = time.monotonic() + 60
    while server.log().count("successfully unloaded 'dllm'") < unloads + CYCLES:
        assert time.monotonic() < end, "an old instance never finished unloading:\n" + server.log()[-3000:]
        time.sleep(0.5)
    _assert_alive(server)
    # The unloaded instances' series are gone: one instance's gauges remain, and the pool is empty.
    time.sleep(1.0)
    m = scrape_metrics(server.metrics_port)
    totals = [k for k in m if k.startswith("dllm:kv_pages_total{")]
    assert len(totals) == 1, totals
    assert metric(m, "dllm:kv_pages_used") == 0
    res = grpc_generate(server.grpc_url, "12+34=", SAMPLING, stream=True)
    assert res.error is None and res.text == expected("12+34=", **SAMPLING)
