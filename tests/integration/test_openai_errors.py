"""The OpenAI-compatible server's failures as OpenAI error objects with their HTTP status (400 naming the
field, 404 unknown model, 503 Triton down or the model not ready), and a client that goes away cancels
its Triton request (the K/V pool frees it)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time

import httpx
import openai
import pytest

from benchmarks import openai_load
from benchmarks.openai_common import Servers
from tests.integration.calls import metric, scrape_metrics
from tests.integration.openai_pair import start_lone_server
from tests.integration.server import free_ports

USER = [{"role": "user", "content": "12+34="}]
# Seconds of work on a CPU: many blocks, one token per step (as test_cancellation.py).
LONG = {"max_tokens": 448, "block_length": 8, "steps": 448, "ignore_eos": True}


@pytest.fixture(scope="module")
def client(openai_pair):
    return openai.OpenAI(base_url=openai_pair.base_url, api_key="unused", max_retries=0, timeout=60)


@pytest.mark.parametrize(("kwargs", "param", "says"), [
    ({"max_tokens": -1}, "max_tokens", "max_tokens: must be >= 1"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "max_completion_tokens: must be >= 1"),
    ({"n": 17}, "n", "n: "),
    ({"temperature": "hot"}, "temperature", "temperature: Input should be a valid number"),
    ({"extra_body": {"top_q": 0.5}}, "top_q", "top_q: unknown sampling parameter"),
    ({"extra_body": {"sparse_retention": 2}}, "sparse_retention", "sparse_retention: must be in [0.01, 1]"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tools: not supported"),
    ({"top_logprobs": 2}, "top_logprobs", "top_logprobs: needs logprobs: true"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "top_logprobs: "),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages", "messages: chat template: the last message"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0].type", "messages[0].content[0].type: 'image_url' is not supported"),
    ({"messages": [{"role": "user", "content": "x" * 20000}]}, "messages", "messages: "),
])
@pytest.mark.parametrize("stream", [False, True])
def test_client_mistakes_are_400_naming_the_field(client, kwargs, param, says, stream):
    args = {"model": "dllm", "messages": USER, "stream": stream, **kwargs}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**args)
    assert e.value.status_code == 400
    assert e.value.body["param"] == param and e.value.body["message"].startswith(says), e.value.body
    assert e.value.body["type"] == "invalid_request_error"


def test_bad_bodies_and_unknown_model(openai_pair):
    url = openai_pair.base_url
    r = httpx.post(f"{url}/chat/completions", content=b'{"model": "dllm",')
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    r = httpx.post(f"{url}/completions", json={"model": "dllm", "prompt": [[1, 2, 3]]})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("prompt: token ids are not supported")
    r = httpx.post(f"{url}/completions", json={"model": "dllm"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(f"{url}/completions", json={"model": "dllm", "prompt": "x" * (5 << 20)})
    assert r.status_code == 413 and r.json()["error"]["message"].startswith("body: larger than")
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="llama", messages=USER)
    assert e.value.body["code"] == "model_not_found" and e.value.body["param"] == "model"


def test_503_when_triton_is_down_or_the_model_not_ready(openai_pair, tmp_path):
    (dead_port,) = free_ports(1)
    for triton_url, model in ((f"127.0.0.1:{dead_port}", "dllm"), (f"127.0.0.1:{openai_pair.grpc_port}", "not_loaded")):
        proc, url = start_lone_server(triton_url, model, tmp_path / f"{model}.log")
        try:
            assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 503
            client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
            for stream in (False, True):
                with pytest.raises(openai.InternalServerError) as e:
                    client.chat.completions.create(model="dllm", messages=USER, stream=stream)
                assert e.value.status_code == 503, e.value.body
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)


def _kv_idle(pair) -> bool:
    m = scrape_metrics(pair.metrics_port)
    return metric(m, "dllm:kv_pages_used") == 0 and metric(m, "dllm:num_requests_running") == 0


def _wait(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def test_disconnect_mid_stream_cancels_the_triton_request(openai_pair):
    aborted = _aborted(openai_pair)
    body = {"model": "dllm", "messages": [{"role": "user", "content": "copy abcdefghij ="}], "stream": True, **LONG}
    with httpx.Client(timeout=60) as http:
        with http.stream("POST", f"{openai_pair.base_url}/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = (line for line in r.iter_lines() if line.startswith("data:"))
            assert json.loads(next(lines)[5:])["choices"][0]["delta"]["role"] == "assistant"
            assert json.loads(next(lines)[5:])["choices"][0]["delta"]["content"]  # a committed delta: it runs
            _wait(lambda: _kv_used(openai_pair) > 0, 30, "the request to hold K/V pages")
    # The connection is closed: the Triton request is cancelled, the engine aborts it and frees its pages.
    _wait(lambda: _aborted(openai_pair) == aborted + 1 and _kv_idle(openai_pair), 5, "the K/V pool to be empty")


def test_disconnect_while_waiting_for_a_whole_answer_cancels_it(openai_pair):
    aborted = _aborted(openai_pair)
    body = json.dumps({"model": "dllm", "prompt": "copy abcdefghij =", **LONG}).encode()
    with socket.create_connection(("127.0.0.1", openai_pair.port)) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        _wait(lambda: _kv_used(openai_pair) > 0, 30, "the request to hold K/V pages")
    _wait(lambda: _aborted(openai_pair) == aborted + 1 and _kv_idle(openai_pair), 5, "the K/V pool to be empty")


def _kv_used(pair) -> float:
    return metric(scrape_metrics(pair.metrics_port), "dllm:kv_pages_used")


def _aborted(pair) -> float:
    return metric(scrape_metrics(pair.metrics_port), "dllm:requests_total", finish_reason="abort")


def test_light_load_and_disconnects(openai_pair):
    """benchmarks/openai_load.py at a CI size (the full 256 requests and 50 disconnects are its default)."""
    servers = Servers(openai_pair.base_url, f"127.0.0.1:{openai_pair.grpc_port}", openai_pair.metrics_port)
    doc = asyncio.run(openai_load.run(servers, requests=32, disconnect_clients=10))
    assert doc["load"]["exact_and_complete"] == 32 and doc["load"]["error_count"] == 0, doc["load"]
    assert doc["load"]["kv_pool_empty_after_s"] is not None
    assert doc["disconnects"]["aborted"] == 10 and doc["disconnects"]["pages_freed_within_s"] < 1.0, doc
