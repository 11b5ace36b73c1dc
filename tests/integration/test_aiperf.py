"""AIPerf (`make aiperf-deps`) through `python -m benchmarks.aiperf` against the test server: every request
streamed and answered, and every answer the one the in-process engine gives."""

from __future__ import annotations

import json

from benchmarks import aiperf, profiles


def test_aiperf_streams_the_engines_answers(server, tmp_path, expected):
    assert aiperf.DEFAULT_AIPERF.is_file(), f"{aiperf.DEFAULT_AIPERF} is missing: run `make aiperf-deps`"
    rc = aiperf.main(["--url", server.http_url, "--concurrency", "2", "--request-count", "8", "--max-tokens", "16",
                      "--out", str(tmp_path)])
    assert rc == 0
    (art,) = tmp_path.glob("*-aiperf")
    summary = json.loads((art / "summary.json").read_text())
    assert summary["aiperf"] == aiperf.AIPERF_VERSION
    metrics = summary["metrics"]
    assert metrics["request_count"]["avg"] == 8 and metrics["time_to_first_token"]["count"] == 8
    sent = {s["session_id"]: s["payloads"][0] for s in json.loads((art / "inputs.json").read_text())["data"]}
    records = json.loads((art / "outputs.json").read_text())["data"]
    assert len(records) == 8
    sampling = {**profiles.load_profile("cpu").get("sampling", {}), "max_tokens": 16}
    for rec in records:
        payload = sent[rec["conversation_id"]]
        assert json.loads(payload["sampling_parameters"]) == sampling
        assert rec["response_text"] == expected(payload["text_input"], **sampling), payload["text_input"]
    assert summary["exact_answers"][1] == 8
