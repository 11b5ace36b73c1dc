"""A cancelled stream is aborted in the engine: its K/V pages are freed and the server goes on."""

from __future__ import annotations

from tests.integration.calls import GrpcStreams, grpc_generate, grpc_inputs, metric, scrape_metrics, wait_for

# Long enough (seconds on a CPU) that it is still running when we cancel: many blocks, one token per step.
LONG = {"max_tokens": 448, "block_length": 8, "steps": 448, "ignore_eos": True}


def test_cancel_mid_stream_frees_the_kv_pages(server, expected):
    streams = GrpcStreams(server.grpc_url)
    try:
        streams.send("long", grpc_inputs("copy abcdefghij =", LONG, stream=True))
        used = wait_for(lambda: metric(scrape_metrics(server.metrics_port), "dllm:kv_pages_used"), 30,
                        "the K/V gauge to show the running request")
        assert used > 0
    finally:
        streams.close(cancel=True)

    def idle():
        m = scrape_metrics(server.metrics_port)
        return (metric(m, "dllm:kv_pages_used") == 0 and metric(m, "dllm:num_requests_running") == 0
                and metric(m, "dllm:requests_total", finish_reason="abort") >= 1)

    wait_for(idle, 15, "the aborted request to release its K/V pages")
    assert "cancelled by the client; aborting it in the engine" in server.log()
    # The server is unaffected: a new request gets the right answer.
    sampling = {"max_tokens": 16, "block_length": 16, "steps": 16}
    assert grpc_generate(server.grpc_url, "12+34=", sampling).text == expected("12+34=", **sampling)
