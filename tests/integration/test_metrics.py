"""The dllm: metrics on the metrics port, with plausible values after traffic."""

from __future__ import annotations

import time

from tests.integration.calls import grpc_generate, metric, scrape_metrics

SAMPLING = {"max_tokens": 16, "block_length": 16, "steps": 16}


def test_dllm_metrics_after_traffic(server):
    before = scrape_metrics(server.metrics_port)
    results = [grpc_generate(server.grpc_url, p, SAMPLING, stream=s) for p, s in
               (("12+34=", True), ("5+6=", False), ("copy abc =", True))]
    assert all(r.error is None for r in results)
    time.sleep(1.0)  # gauges are refreshed twice a second, off the engine's loop
    m = scrape_metrics(server.metrics_port)

    def grew(name, **labels):
        return metric(m, name, **labels) - metric(before, name, **labels)

    labels = {"model": "dllm", "version": "1"}
    assert sum(grew("dllm:requests_total", finish_reason=r, **labels) for r in ("eos", "length", "stop")) == 3
    assert grew("dllm:prompt_tokens_total", **labels) == len("12+34=") + len("5+6=") + len("copy abc =")
    generated = grew("dllm:generation_tokens_total", **labels)
    assert 3 <= generated <= 3 * 16
    for hist in ("dllm:time_to_first_token_seconds", "dllm:e2e_request_latency_seconds", "dllm:tokens_per_forward"):
        assert grew(f"{hist}_count", **labels) >= 2, hist
    e2e = grew("dllm:e2e_request_latency_seconds_sum", **labels)
    assert 0 < e2e < 60
    per_forward = grew("dllm:tokens_per_forward_sum", **labels) / grew("dllm:tokens_per_forward_count", **labels)
    assert 0 < per_forward <= 16
    # Every engine iteration is timed and its Refresh / Reuse tokens counted (the first step of each
    # request is a Refresh of its whole sequence; the later steps of a block are Reuse steps).
    assert grew("dllm:iteration_seconds_count", **labels) >= 3
    assert grew("dllm:refresh_tokens_total", **labels) >= len("12+34=") + 16
    assert grew("dllm:reuse_tokens_total", **labels) > 0
    assert grew("dllm:iteration_predicted_seconds_total", **labels) > 0
    assert grew("dllm:iteration_host_seconds_total", **labels) > 0
    assert metric(m, "dllm:kv_pages_total", **labels) > 0
    assert metric(m, "dllm:kv_pages_used", **labels) == 0
    assert metric(m, "dllm:num_requests_running", **labels) == metric(m, "dllm:num_requests_waiting", **labels) == 0
