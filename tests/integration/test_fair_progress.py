"""Fair progress on the real server (issue 20): 16 heavy requests (448 tokens, block length 1: every
step a Refresh of the whole sequence) running and queued, then a short request over gRPC and over
HTTP: each finishes within 5x its time on the idle server plus one heavy iteration (the mean engine
iteration while only heavy requests run, from the server's metrics), with its right answer. Before
the fair-share scheduler the short request got nothing for 90-150 s behind 9 or more such requests."""

from __future__ import annotations

from benchmarks.fair_progress import SHORT_PROMPT, run
from tests.integration.calls import metric, scrape_metrics
from tests.integration.test_cancellation import wait_for


def test_short_request_is_not_starved_by_heavy_ones(server, expected):
    result = run(server.grpc_url, server.http_url, server.metrics_port, n_heavy=16, log=lambda *_: None)
    answer = expected(SHORT_PROMPT)
    for protocol in ("grpc", "http"):
        loaded = result["loaded"][protocol]
        assert loaded["text"] == answer, (protocol, loaded)
        assert loaded["total_s"] <= result["bound_s"][protocol], (protocol, result)
    # The heavy requests were still there: the short ones did not just wait for them to end.
    assert result["heavy_running_when_measured"] == 16, result

    def idle():  # the cancelled heavy requests are aborted and their K/V freed
        m = scrape_metrics(server.metrics_port)
        return metric(m, "dllm:num_requests_running") == 0 and metric(m, "dllm:kv_pages_used") == 0

    wait_for(idle, 60, "the cancelled heavy requests to leave the engine")
