"""Many streams at once: every one completes with the engine's answer, nothing lost or duplicated."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.integration.calls import GrpcStreams, grpc_generate, grpc_inputs

SAMPLING = {"max_tokens": 32, "block_length": 16, "steps": 32}
PROMPTS = [f"{a}+{b}=" for a, b in zip(range(10, 90, 5), range(73, 9, -4), strict=True)]  # 16 prompts


def test_16_concurrent_streams_on_one_connection(server, expected):
    assert len(PROMPTS) == 16
    streams = GrpcStreams(server.grpc_url)
    try:
        for i, prompt in enumerate(PROMPTS):
            streams.send(f"r{i}", grpc_inputs(prompt, SAMPLING, stream=True, return_num_output_tokens=True,
                                              return_finish_reason=True))
        results = streams.wait_all(timeout=120)
    finally:
        streams.close()
    for i, prompt in enumerate(PROMPTS):
        res = results[f"r{i}"]
        assert res.error is None, res.error
        assert res.finals == 1  # exactly one FINAL per request
        assert res.text == expected(prompt, **SAMPLING), prompt  # nothing lost, nothing repeated
        assert all(res.deltas[:-1])  # only the final response may be empty
        assert res.finish_reason in ("stop", "length")


def test_16_clients_in_parallel(server, expected):
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda p: grpc_generate(server.grpc_url, p, SAMPLING, stream=True), PROMPTS))
    assert [r.text for r in results] == [expected(p, **SAMPLING) for p in PROMPTS]
    assert all(r.finals == 1 and r.error is None for r in results)
