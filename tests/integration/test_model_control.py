"""Explicit model control: only a client with the admin key may unload or load; under streaming
traffic (gRPC streams carrying request after request, and HTTP SSE) the model unloads and loads again,
cycle after cycle, without a crash; every request gets exactly one final response, the right answer or
one clean error; the old instances' metric series go; Ctrl-C then stops the server cleanly and leaves
nothing in /dev/shm."""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.integration.calls import grpc_generate, metric, scrape_metrics
from tests.integration.server import start_server
from tests.integration.stream_clients import GrpcStreamClient, Ledger, SseClient

SAMPLING = {"max_tokens": 16, "block_length": 16, "steps": 16}
# The reporter's probe (issue 20): 128 tokens in blocks of 8.
PROBE = {"max_tokens": 128, "block_length": 8, "steps": 128}
# Outlasts a model load (seconds on a CPU): the old instance still serves this stream while its
# successor loads (Triton loads the new instance beside the unloading one).
LONG = {"max_tokens": 256, "block_length": 8, "steps": 256, "ignore_eos": True}
# A delta (a write on the stream) at nearly every step.
BUSY = {"max_tokens": 64, "block_length": 2, "steps": 64, "ignore_eos": True}
CYCLES = 5
# What a request may get instead of its answer while the model is swapped (Triton's own refusals
# and ours while unloading): nothing else.
TRANSITION_ERRORS = ("unknown model", "no available versions", "model is unloading", "is not ready",
                     "not found")
CRASH_MARKS = ("Signal (6)", "Signal (11)", "ASSERTION FAILED", "corrupt", "double free")


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


def _admin_client(server, protocol: str):
    # Time limits everywhere: a server whose heap got corrupted hangs instead of exiting.
    if protocol == "grpc":
        return grpcclient.InferenceServerClient(server.grpc_url), {"client_timeout": 120}
    return httpclient.InferenceServerClient(server.http_url, connection_timeout=120, network_timeout=120), {}


def _cycle(server, protocol: str, streams: list[GrpcStreamClient]) -> None:
    client, timeout = _admin_client(server, protocol)
    try:
        client.unload_model("dllm", headers=server.admin(protocol), **timeout)
        end = time.monotonic() + 60
        while client.is_model_ready("dllm"):
            assert time.monotonic() < end, "the model did not unload:\n" + server.log()[-3000:]
            time.sleep(0.05)
        # Requests for the unloaded model on live streams while the old instance still has requests on
        # those same streams (and while its successor loads): Triton 2.51 refuses them on a path that
        # does not wait for a write in flight there (issue 20: SIGABRT in proto_buffer_writer.h).
        for k in streams:
            k.knock()
            k.echo.set()
        loaded: list = []

        def load() -> None:  # its own client: tritonclient.http's must stay on the thread that made it
            loader_client, loader_timeout = _admin_client(server, protocol)
            try:
                loader_client.load_model("dllm", headers=server.admin(protocol), **loader_timeout)
                loaded.append("loaded")  # returns once loaded
            except Exception as e:
                loaded.append(e)
            finally:
                loader_client.close()

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        checked = time.monotonic()
        while loader.is_alive():
            streams[-1].knock()  # the busy stream: several requests streaming on it
            time.sleep(0.1)
            if time.monotonic() - checked > 0.5:  # a crashed server hangs the load call: fail at once
                checked = time.monotonic()
                _assert_alive(server)
        for k in streams:
            k.echo.clear()
        assert loaded == ["loaded"] and client.is_model_ready("dllm"), f"{loaded}\n" + server.log()[-3000:]
    finally:
        client.close()


def _assert_alive(server) -> None:
    log = server.log()
    crashed = any(m in log for m in CRASH_MARKS)
    assert server.proc.poll() is None and not crashed, "tritonserver crashed:\n" + log[-5000:]


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm"))


def _traffic(server, expected, ledger: Ledger) -> tuple[list[GrpcStreamClient], list[SseClient]]:
    def case(prompt: str, sampling: dict) -> tuple[str, dict, str]:
        return prompt, sampling, expected(prompt, **sampling)

    short = [case(f"{10 + i}+{20 + i}=", PROBE) for i in range(4)]
    # One request at a time, the next one as soon as the last ended (the reporter's probe) ...
    streams = [GrpcStreamClient(server.grpc_url, f"grpc{i}", short[i:] + short[:i], ledger) for i in range(2)]
    # ... and a stream that always has three requests writing deltas (the busy stream, knocked on).
    busy = [case("copy abcdefgh =", LONG), case("copy hgfedcba =", BUSY), case("copy abcd =", BUSY)]
    streams.append(GrpcStreamClient(server.grpc_url, "grpc-busy", busy, ledger, depth=3))
    sse = [SseClient(server.http_url, f"sse{i}", *case(f"{30 + i}+{40 + i}=", PROBE), ledger) for i in range(2)]
    return streams, sse


def test_unload_and_load_cycles_under_streaming_traffic(tmp_path, expected):
    started = time.monotonic()
    shm_before = _shm()
    server = start_server(tmp_path / "server.log")
    ledger = Ledger()
    stopped, regions = False, set(server.stubs().values())
    try:
        streams, sse = _traffic(server, expected, ledger)
        for c in streams + sse:
            c.start()
        time.sleep(2)  # streams in flight before the first unload
        for i in range(CYCLES):
            if i:
                time.sleep(1)  # answers from the new instance before the next swap
            _cycle(server, "grpc" if i % 2 == 0 else "http", streams)
            regions |= set(server.stubs().values())
            _assert_alive(server)
        for c in streams + sse:
            c.stop.set()
        hung = [c.name for c in streams + sse if not c.join(200)]
        _assert_alive(server)
        assert not hung and not ledger.problems, (hung, ledger.problems[:5])
        # Every request exactly one final response: its right answer, or one error of the swap.
        assert {rid: ledger.finals.get(rid, 0) for rid in ledger.sent if ledger.finals.get(rid) != 1} == {}
        unexpected = {rid: e for rid, e in ledger.errors.items() if not any(m in e for m in TRANSITION_ERRORS)}
        wrong = {rid: ledger.texts.get(rid) for rid in ledger.done() if ledger.texts.get(rid) != ledger.expected[rid]}
        assert not unexpected and not wrong, (list(unexpected.items())[:5], list(wrong.items())[:5])
        refused = [rid for rid in ledger.errors if rid.startswith("grpc")]
        long_done = [rid for rid in ledger.done() if ledger.prompts[rid] == "copy abcdefgh ="]
        assert len(refused) >= CYCLES, "no requests reached live streams during the swaps"
        assert len(ledger.done()) >= 4 * CYCLES and long_done, (len(ledger.done()), long_done)
        # The unloaded instances' series are gone: one instance's gauges remain, and the pool is empty.
        end = time.monotonic() + 60
        while server.log().count("successfully unloaded 'dllm'") < CYCLES:
            assert time.monotonic() < end, "an old instance never finished unloading:\n" + server.log()[-3000:]
            time.sleep(0.5)
        m = scrape_metrics(server.metrics_port)
        assert len([k for k in m if k.startswith("dllm:kv_pages_total{")]) == 1
        assert metric(m, "dllm:kv_pages_used") == 0
        res = grpc_generate(server.grpc_url, "12+34=", SAMPLING, stream=True)
        assert res.error is None and res.text == expected("12+34=", **SAMPLING)
        code = server.stop_cleanly()
        stopped = True
        assert code == 0, "tritonserver did not stop cleanly:\n" + server.log()[-3000:]
        left = (_shm() - shm_before) & regions
        assert regions and not left, f"left in /dev/shm: {left}"
        print(f"\n{CYCLES} cycles, {len(ledger.sent)} requests: {len(ledger.done())} answered, "
              f"{len(ledger.errors)} refused during the swaps, {time.monotonic() - started:.0f} s")
    finally:
        if not stopped:
            server.stop(30)
