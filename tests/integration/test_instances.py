"""Two model instances in one server (`instance_group { count: 2, kind: KIND_CPU }`): two stub
processes, each with its own engine, K/V pool and metric series (told apart by the `instance` and
`pid` labels). Requests spread over both; a cancel with both busy frees both pools; an unload / load
with both busy finishes every request on the old instances and leaves only the new instances' series;
a drain with both busy (Kubernetes' preStop) waits for their requests, then Ctrl-C stops cleanly. One
server for the module (its stop is the last check)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from backend.server.probe import drain
from tests.integration.calls import GrpcStreams, grpc_generate, grpc_inputs, metric, scrape_metrics
from tests.integration.conftest import MODEL_REPOSITORY
from tests.integration.server import start_server

INSTANCES = 2
INSTANCE_GROUP = f"\ninstance_group [ {{ count: {INSTANCES} kind: KIND_CPU }} ]\n"
SAMPLING = {"max_tokens": 16, "block_length": 16, "steps": 16}
# Seconds on a CPU: still running when the test acts on it (one token per step, many blocks).
LONG = {"max_tokens": 256, "block_length": 8, "steps": 256, "ignore_eos": True}
PROMPTS = [f"{a}+{b}=" for a, b in zip(range(11, 91, 10), range(70, 6, -8), strict=True)]  # 8 prompts


def write_repository(root: Path, instance_group: str = INSTANCE_GROUP) -> Path:
    """A model repository holding `dllm` with the real config.pbtxt, model.py and bundled checkpoint,
    plus `instance_group`."""
    source = MODEL_REPOSITORY / "dllm"
    (root / "dllm" / "1").mkdir(parents=True)
    (root / "dllm" / "config.pbtxt").write_text((source / "config.pbtxt").read_text() + instance_group)
    for entry in (source / "1").iterdir():
        if entry.name != "__pycache__":
            (root / "dllm" / "1" / entry.name).symlink_to(entry.resolve())
    return root


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    root = write_repository(tmp_path_factory.mktemp("two_instances"))
    srv = start_server(tmp_path_factory.mktemp("tritonserver_two") / "server.log", root)
    yield srv
    srv.stop(30)  # only if the last test did not stop it


def series(m: dict[str, float], name: str) -> dict[tuple[str, str], float]:
    """(instance, pid) -> value of `name`'s series."""
    out = {}
    for key, value in m.items():
        base, _, rest = key.partition("{")
        if base == name:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
            out[(labels["instance"], labels["pid"])] = value
    return out


def wait_for(predicate, timeout: float, what: str, server):
    end = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < end, (f"timed out waiting for {what}; running: "
                                        f"{series(scrape_metrics(server.metrics_port), 'dllm:num_requests_running')}"
                                        f"; log tail:\n{server.log()[-3000:]}")
        time.sleep(0.1)
    return value


def both_busy(server) -> bool:
    running = series(scrape_metrics(server.metrics_port), "dllm:num_requests_running")
    return len(running) == INSTANCES and all(v > 0 for v in running.values())


def send_long(streams: GrpcStreams, n: int, tag: str) -> None:
    for i in range(n):
        streams.send(f"{tag}{i}", grpc_inputs(f"copy abc{i}defg =", LONG, stream=True))


def test_two_instances_each_with_its_own_engine_and_series(two):
    assert len(two.stubs()) == INSTANCES, two.stubs()
    assert len(set(two.stubs().values())) == INSTANCES  # a /dev/shm region each
    assert len(re.findall(r"dllm: .*; settings from", two.log())) == INSTANCES  # an engine each
    # Gauges are set by each instance's response thread, twice a second.
    def pools() -> dict:
        sizes = {k: v for k, v in series(scrape_metrics(two.metrics_port), "dllm:kv_pages_total").items() if v > 0}
        return sizes if len(sizes) == INSTANCES else {}

    total = wait_for(pools, 10, "both pools' sizes", two)
    assert {inst for inst, _ in total} == {"dllm_0_0", "dllm_0_1"}, total
    assert {int(pid) for _, pid in total} == set(two.stubs()), (total, two.stubs())


def test_requests_spread_over_both_instances(two, expected):
    before = series(scrape_metrics(two.metrics_port), "dllm:request_prompt_tokens_count")
    streams = GrpcStreams(two.grpc_url)
    try:
        for i, prompt in enumerate(PROMPTS):
            streams.send(f"r{i}", grpc_inputs(prompt, SAMPLING, stream=True))
        results = streams.wait_all(120)
    finally:
        streams.close()
    assert [results[f"r{i}"].text for i in range(len(PROMPTS))] == [expected(p, **SAMPLING) for p in PROMPTS]
    assert all(r.finals == 1 and r.error is None for r in results.values())
    after = series(scrape_metrics(two.metrics_port), "dllm:request_prompt_tokens_count")
    served = {key: after[key] - before.get(key, 0) for key in after}
    assert sum(served.values()) == len(PROMPTS)
    assert len(served) == INSTANCES and all(n > 0 for n in served.values()), served


def test_cancel_with_both_instances_busy(two, expected):
    streams = GrpcStreams(two.grpc_url)
    try:
        send_long(streams, 4, "c")
        wait_for(lambda: both_busy(two), 60, "both instances to run a request", two)
        assert all(v > 0 for v in series(scrape_metrics(two.metrics_port), "dllm:kv_pages_used").values())
    finally:
        streams.close(cancel=True)

    def both_idle() -> bool:
        m = scrape_metrics(two.metrics_port)
        aborted = {k for k, v in m.items() if k.startswith("dllm:requests_total{") and 'finish_reason="abort"' in k
                   and v >= 1}
        return (len(aborted) == INSTANCES and metric(m, "dllm:kv_pages_used") == 0
                and metric(m, "dllm:num_requests_running") == 0)

    wait_for(both_idle, 30, "both instances to abort their requests and free their K/V pages", two)
    assert two.log().count("cancelled by the client; aborting it in the engine") >= 4
    assert grpc_generate(two.grpc_url, "12+34=", SAMPLING).text == expected("12+34=", **SAMPLING)


def test_swap_with_both_instances_busy_then_ctrl_c(two, expected):
    old = set(two.stubs())
    client = grpcclient.InferenceServerClient(two.grpc_url)
    streams = GrpcStreams(two.grpc_url)
    try:
        send_long(streams, 4, "s")
        wait_for(lambda: both_busy(two), 60, "both instances to run a request", two)
        client.unload_model("dllm", headers=two.admin(), client_timeout=60)
        wait_for(lambda: not client.is_model_ready("dllm"), 30, "the unload to start", two)
        client.load_model("dllm", headers=two.admin(), client_timeout=180)
        results = streams.wait_all(120)  # the old instances finish their requests
    finally:
        streams.close()
        client.close()
    for i in range(4):
        res = results[f"s{i}"]
        assert res.error is None and res.finals == 1, res
        assert res.text == expected(f"copy abc{i}defg =", **LONG)
    wait_for(lambda: not (old & set(two.stubs())), 60, "the old instances' stubs to exit", two)
    total = series(scrape_metrics(two.metrics_port), "dllm:kv_pages_total")
    assert {int(pid) for _, pid in total} == set(two.stubs()) and len(total) == INSTANCES, total  # old series gone

    # A pod's stop with both new instances busy: the preStop drain waits while they finish (the server
    # serving as usual), then Ctrl-C (SIGTERM in a pod) finds nothing in flight: exit 0, no stub and no
    # /dev/shm region left. (Stopping tritonserver 2.51 with requests in flight is what the drain avoids:
    # a readiness call during its shutdown can crash a stub.)
    streams = GrpcStreams(two.grpc_url)
    try:
        send_long(streams, 4, "k")
        wait_for(lambda: both_busy(two), 60, "both new instances to run a request", two)
        assert drain(metrics_port=two.metrics_port, settle_s=0, wait_s=120, poll_s=0.5, log=lambda _: None)
        assert not both_busy(two)
        finished = streams.wait_all(5)  # already answered: the drain waited for it
    finally:
        streams.close()
    for i in range(4):
        res = finished[f"k{i}"]
        assert res.error is None and res.finals == 1, res
        assert res.text == expected(f"copy abc{i}defg =", **LONG)
    code = two.stop_cleanly(timeout=60)
    assert code == 0, two.log()[-3000:]
    assert two.log().count("successfully unloaded 'dllm'") >= 2
