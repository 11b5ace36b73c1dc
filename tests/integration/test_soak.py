"""A bounded soak (about a minute; DLLM_SOAK_SECONDS to change it): clients on every path at once, some
cancelling and some sending invalid requests, for a fixed time. No response may be lost, duplicated
or wrong; the server's own counters agree; the K/V pool ends empty."""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request

from tests.integration.calls import (
    GrpcStreams,
    grpc_generate,
    grpc_inputs,
    http_post,
    metric,
    scrape_metrics,
    sse_events,
)

SOAK_S = float(os.environ.get("DLLM_SOAK_SECONDS", "50"))
WORK = [  # (prompt, sampling): greedy and seeded sampling, short and longer, a stop string
    ("12+34=", {"max_tokens": 16, "block_length": 16, "steps": 16}),
    ("sort dcba =", {"max_tokens": 16, "block_length": 8, "steps": 16}),
    ("copy abcdef =", {"max_tokens": 32, "block_length": 8, "steps": 32, "temperature": 0.8, "seed": 11}),
    ("reverse hello =", {"max_tokens": 24, "block_length": 8, "threshold": 0.9}),
    ("1234+4321=", {"max_tokens": 32, "block_length": 16, "steps": 32, "ignore_eos": True, "stop": ["55"]}),
]
LONG = {"max_tokens": 256, "block_length": 8, "steps": 256, "ignore_eos": True}
REFS = ("eos", "length", "stop")


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok, self.refused, self.cancelled, self.problems = 0, 0, 0, []

    def add(self, **counts):
        with self.lock:
            for k, v in counts.items():
                setattr(self, k, getattr(self, k) + v)

    def problem(self, text: str):
        with self.lock:
            self.problems.append(text)


def test_soak_every_path_at_once(server, expected):
    answers = {(p, json.dumps(s, sort_keys=True)): expected(p, **s) for p, s in WORK}
    before = scrape_metrics(server.metrics_port)
    tally, deadline = Tally(), time.monotonic() + SOAK_S

    def check(prompt, sampling, text, error, finals):
        if error is not None or finals != 1 or text != answers[(prompt, json.dumps(sampling, sort_keys=True))]:
            tally.problem(f"{prompt} {sampling}: text={text!r} error={error!r} finals={finals}")
        else:
            tally.add(ok=1)

    def grpc_client(offset: int, stream: bool):
        i = offset
        while time.monotonic() < deadline:
            prompt, sampling = WORK[i % len(WORK)]
            res = grpc_generate(server.grpc_url, prompt, sampling, stream=stream, exclude_input_in_output=True)
            check(prompt, sampling, res.text, res.error, res.finals)
            i += 1

    def http_client(offset: int, stream: bool):
        i = offset
        while time.monotonic() < deadline:
            prompt, sampling = WORK[i % len(WORK)]
            # sampling_parameters, not "parameters": Triton's request parameters cannot hold a list (stop).
            body = {"text_input": prompt, "sampling_parameters": json.dumps(sampling), "exclude_input_in_output": True}
            if stream:
                body["stream"] = True
                status, text = http_post(server.http_url, "/v2/models/dllm/generate_stream", body)
                events = sse_events(text)
                error = next((e["error"] for e in events if "error" in e), None)
                check(prompt, sampling, "".join(e.get("text_output", "") for e in events), error, 1)
            else:
                status, text = http_post(server.http_url, "/v2/models/dllm/generate", body)
                reply = json.loads(text)
                check(prompt, sampling, reply.get("text_output"), reply.get("error"), 1 if status == 200 else 0)
            i += 1

    def canceller():
        while time.monotonic() < deadline:
            streams = GrpcStreams(server.grpc_url)
            streams.send("long", grpc_inputs("copy abcdefgh =", LONG, stream=True))
            rid, final = streams.next_event(60)  # the first delta: it is running
            streams.close(cancel=True)
            if final:
                tally.problem("a cancelled long stream ended before it was cancelled")
            tally.add(cancelled=1)
            time.sleep(0.5)

    def invalid_client():
        while time.monotonic() < deadline:
            res = grpc_generate(server.grpc_url, "1+1=", {"max_tokens": 0})
            if res.error is None or not res.error.startswith("max_tokens:") or res.finals != 1:
                tally.problem(f"invalid request: {res.error!r}, {res.finals} finals")
            tally.add(refused=1)
            status, text = http_post(server.http_url, "/v2/models/dllm/generate",
                                     {"text_input": "1+1=", "sampling_parameters": '{"temperature": NaN}'})
            if status != 400 or not json.loads(text)["error"].startswith("temperature:"):
                tally.problem(f"invalid HTTP request: {status} {text[:200]}")
            tally.add(refused=1)
            time.sleep(0.3)

    workers = [threading.Thread(target=grpc_client, args=(i, True)) for i in range(3)]
    workers += [threading.Thread(target=grpc_client, args=(3, False)),
                threading.Thread(target=http_client, args=(1, False)),
                threading.Thread(target=http_client, args=(2, True)),
                threading.Thread(target=canceller), threading.Thread(target=invalid_client)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(SOAK_S + 180)
    assert not any(w.is_alive() for w in workers), "a client is still waiting for a response"
    assert not tally.problems, (len(tally.problems), sorted(set(tally.problems))[:5])
    assert tally.ok >= 20 and tally.cancelled >= 3 and tally.refused >= 6, vars(tally)

    def idle():
        m = scrape_metrics(server.metrics_port)
        return m if metric(m, "dllm:kv_pages_used") == 0 and metric(m, "dllm:num_requests_running") == 0 else None

    end, after = time.monotonic() + 15, None
    while after is None:
        assert time.monotonic() < end, "the K/V pool did not empty after the soak"
        time.sleep(0.5)
        after = idle()
    # The server counted what the clients counted: each success once, each cancellation as an abort.
    finished = sum(metric(after, "dllm:requests_total", finish_reason=r) - metric(before, "dllm:requests_total",
                                                                                   finish_reason=r) for r in REFS)
    assert finished == tally.ok
    aborted = metric(after, "dllm:requests_total", finish_reason="abort") - metric(
        before, "dllm:requests_total", finish_reason="abort")
    assert aborted == tally.cancelled
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/dllm/ready", timeout=10) as r:
        assert r.status == 200
