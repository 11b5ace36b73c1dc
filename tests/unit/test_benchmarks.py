"""Benchmark and load-test code on tiny inputs: workloads are seeded and replayable, the engine
benchmark runs end to end and writes valid JSON, a table and plots, Perf Analyzer's export parses into
the same figures. No timing assertions: only shapes, counts and definitions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.training import tasks
from benchmarks import engine as engine_bench
from benchmarks import fit_device, perf_analyzer, report, schedule_sim, workloads
from benchmarks.loadtest_report import compare, markdown
from benchmarks.metrics import ITERATION_FIELDS, RequestRecord, percentile, summarize
from benchmarks.perf_export import records_from_export, request_key
from benchmarks.prompt_sources import SyntheticPrompts, TaskPrompts

SOURCE = SyntheticPrompts(vocab_size=97, special_ids=[94, 95, 96])
MIXED = {"name": "mixed", "arrival": "poisson", "rate": 5.0, "n": 20, "seed": 3,
         "classes": [{"kind": "short", "weight": 0.7, "prompt": [4, 16], "gen": [8, 24]},
                     {"kind": "long", "weight": 0.3, "prompt": [64, 128], "gen": [16, 48]}]}


def test_workloads_are_seeded_and_replay_from_file(tmp_path):
    a, b = workloads.build(MIXED, SOURCE, gen_multiple=8), workloads.build(MIXED, SOURCE, gen_multiple=8)
    assert [i.to_json() for i in a.items] == [i.to_json() for i in b.items]
    assert all(i.max_tokens % 8 == 0 for i in a.items)
    assert {i.kind for i in a.items} == {"short", "long"}
    assert a.items[0].arrival == 0.0 and all(x.arrival <= y.arrival for x, y in zip(a.items, a.items[1:], strict=False))
    again = workloads.load(a.save(tmp_path / "mixed.jsonl"))
    assert again.spec["name"] == "mixed" and [i.to_json() for i in again.items] == [i.to_json() for i in a.items]
    # Another rate: the same requests, other arrival times.
    faster = workloads.build(workloads.with_rate(MIXED, 50.0), SOURCE, gen_multiple=8)
    assert [i.prompt_seed for i in faster.items] == [i.prompt_seed for i in a.items]
    assert faster.duration < a.duration
    assert SOURCE.ids(10, 7) == SOURCE.ids(10, 7) and not set(SOURCE.ids(200, 7)) & {94, 95, 96}


def test_burst_intervals_and_foreign_trace(tmp_path):
    burst = workloads.build({"name": "burst", "arrival": "burst", "n": 4}, SOURCE)
    assert burst.intervals_us() == [1, 1, 1, 1]  # never 0: Perf Analyzer 2.50 crashes on zero gaps
    trace = tmp_path / "trace.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 12, "output_length": 30}\n'
                     '{"timestamp": 1500, "input_length": 300, "output_length": 7}\n')
    wl = workloads.load(trace, SOURCE, gen_multiple=8)
    assert [(i.arrival, i.max_tokens, i.prompt_len, i.kind) for i in wl.items] == [(0.0, 32, 12, "short"),
                                                                                   (1.5, 8, 300, "long")]
    assert wl.intervals_us() == [1, 1_500_000]


def test_task_prompts_carry_answers():
    short, long = TaskPrompts().make("short", 0, seed=1), TaskPrompts().make("long", 200, seed=1)
    assert short.text and short.answer is not None and short.task != "kv"
    assert long.task == "kv" and 150 <= len(long.text) <= 230


def test_metrics_definitions():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5 and percentile([], 50) is None
    recs = [RequestRecord(0, "short", 0.0, 5, first_delta=0.5, finish=1.0, output_tokens=10, correct=True),
            RequestRecord(1, "short", 1.0, 5, first_delta=1.5, finish=3.0, output_tokens=30, correct=False),
            RequestRecord(2, "short", 1.0, 5, error="boom")]
    s = summarize(recs)
    assert (s["completed"], s["errors"], s["output_tokens"]) == (2, 1, 40)
    assert s["throughput_tok_s"] == pytest.approx(40 / 3.0, rel=1e-3)
    assert s["latency_s"]["max"] == 2.0 and s["ttfd_s"]["p50"] == 0.5 and s["accuracy"] == 0.5
    assert s["itl_s"]["p50"] is None  # no request streamed a second delta
    streamed = RequestRecord(3, "short", 0.0, 5, finish=2.0, output_tokens=3)
    for t in (0.25, 0.5, 1.25):
        streamed.delta(t)
    assert streamed.first_delta == 0.25 and streamed.gaps == [0.25, 0.75]
    assert summarize([streamed])["itl_s"]["max"] == 0.75 and streamed.to_json()["max_gap"] == 0.75
    assert "gaps" not in streamed.to_json() and RequestRecord.from_json(streamed.to_json()).first_delta == 0.25


def test_engine_benchmark_writes_json_table_and_plots(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Benchmarks\n\n{report.README_BEGIN}\nold\n{report.README_END}\n\n## Next\n")
    out = tmp_path / "results"
    rc = engine_bench.main(["--profile", "tiny", "--out", str(out), "--variants", "fcfs,static", "--threads", "1",
                            "--tag", "testbox", "--readme", str(readme)])
    assert rc == 0
    [path] = out.glob("*-testbox-tiny.json")
    doc = json.loads(path.read_text())
    assert doc["baseline"] == "fcfs" and doc["machine_tag"] == "testbox"
    runs = {(r["variant"], r["workload"]) for r in doc["results"]}
    assert runs == {(v, w) for v in ("fcfs", "static") for w in ("burst", "poisson@20", "poisson@80")}
    for r in doc["results"]:
        s = r["summary"]
        assert s["completed"] == s["requests"] == 6 and s["errors"] == 0
        assert s["output_tokens"] == 6 * 16  # ignore_eos: every request generates max_tokens
        assert s["latency_s"]["p50"] <= s["latency_s"]["p99"]
        assert s["itl_s"]["p50"] > 0  # 16 tokens in blocks of 8 stream more than one delta
        assert r["engine"]["tokens_per_forward"] == 1.0  # one token per denoising step
        assert r["memory"]["peak_rss_mib"] > 0 and "ratios" in r
    assert {r["ratios"]["throughput"] for r in doc["results"] if r["variant"] == "fcfs"} == {1.0}
    assert sorted(doc["plots"]) == ["latency_cdf", "rate_sweep"]
    assert all((out / name).stat().st_size > 1000 for name in doc["plots"].values())
    table = (out / path.name.replace(".json", ".md")).read_text()
    assert table.count("| burst |") == 4  # the main table, and the schedulers' iteration-time table
    assert "max/median" in table and all(r["engine"]["iteration_ms"]["max"] > 0 for r in doc["results"])
    # Every iteration is kept (the profile's `iteration_log`); a device model fits them and the schedule
    # model runs on it.
    for r in doc["results"]:
        assert set(r["iterations"]) == set(ITERATION_FIELDS)
        assert {len(col) for col in r["iterations"].values()} == {r["engine"]["iterations"]}
    assert any(kv > 0 for r in doc["results"] for kv in r["iterations"]["kv_bytes"])
    assert all(h > 0 for r in doc["results"] for h in r["iterations"]["host_seconds"])  # commits take time
    assert fit_device.main([str(path), "--variants", "fcfs", "--out", str(tmp_path / "device.json")]) == 0
    fitted = json.loads((tmp_path / "device.json").read_text())["report"]
    assert fitted["iterations"] == sum(r["engine"]["iterations"] for r in doc["results"] if r["variant"] == "fcfs")
    assert set(fitted["holdout_error_pct"]) == {"burst", "poisson@20", "poisson@80"}
    assert schedule_sim.main(["--profile", "tiny", "--device", str(tmp_path / "device.json"), "--workloads", "burst",
                              "--policies", "fcfs"]) == 0
    assert len(list((out / path.name.replace(".json", ".workloads")).glob("*.jsonl"))) == 3
    text = readme.read_text()
    assert "old" not in text and "| burst | static |" in text and text.endswith("## Next\n")


def _export(tmp_path, items, sampling):
    reqs = []
    for n, item in enumerate(items):
        t = 1_000_000_000 + n * 100_000_000
        inputs = {"text_input": item.text, "sampling_parameters": perf_analyzer.sampling_json(item, sampling)}
        reqs.append({"timestamp": t, "request_inputs": inputs,
                     "response_timestamps": [t + 50_000_000, t + 200_000_000],
                     "response_outputs": [{"text_output": item.answer[:1], "num_output_tokens": 1},
                                          {"text_output": item.answer[1:], "num_output_tokens": 2,
                                           "finish_reason": "eos"}]})
    path = tmp_path / "export.json"
    path.write_text(json.dumps({"experiments": [{"experiment": {"mode": "concurrency", "value": 2},
                                                 "requests": reqs}]}))
    return path


def test_perf_analyzer_export_parses_and_compares(tmp_path):
    wl = workloads.build({"name": "closed-c4", "arrival": "burst", "n": 4}, TaskPrompts(), 16)
    sampling = {"block_length": 16}
    data = perf_analyzer.input_data(wl, sampling)["data"]
    assert len(data) == 4 and data[0]["stream"] == [True] and json.loads(data[0]["sampling_parameters"][0]) == {
        "block_length": 16, "max_tokens": wl.items[0].max_tokens}
    keyed = {request_key(i.text, perf_analyzer.sampling_json(i, sampling)): (n, i) for n, i in enumerate(wl.items)}
    [exp] = records_from_export(_export(tmp_path, wl.items, sampling), keyed)
    recs = exp["records"]
    assert [r.index for r in recs] == [0, 1, 2, 3] and all(r.correct for r in recs)
    assert recs[1].arrival == pytest.approx(0.1) and recs[1].first_delta == pytest.approx(0.15)
    s = summarize(recs)
    assert s["output_tokens"] == 12 and s["latency_s"]["p50"] == pytest.approx(0.2)
    triton = {"workload": "closed-c4", "mode": "concurrency", "concurrency": 4, "rate": None, "summary": s,
              "variant": "triton"}
    inproc = {"workload": "closed-c4", "variant": "fcfs", "concurrency": 4, "rate": None,
              "summary": {**s, "throughput_tok_s": s["throughput_tok_s"] * 2,
                          "latency_s": {**s["latency_s"], "p50": 0.1}}}
    [row] = compare([triton], {"baseline": "fcfs", "results": [inproc]})
    assert row["throughput_tok_s"]["overhead_pct"] == 50.0 and row["latency_p50_s"]["overhead_pct"] == 100.0
    table = markdown({"model": "dllm", "url": "x", "machine_tag": "m", "created": "now", "results": [triton],
                      "comparison": [row], "engine_results": "e.json"})
    assert "| concurrency | 4 | closed-c4 |" in table and "50.0%" in table


def test_perf_analyzer_command_per_mode(tmp_path):
    wl = workloads.build({"name": "burst", "arrival": "burst", "n": 2}, TaskPrompts())
    args = (tmp_path / "d.json", tmp_path / "e.json", tmp_path / "c.csv")
    pytest.importorskip("tritonclient")
    try:
        conc = perf_analyzer.command(perf_analyzer.Level("concurrency", 4, wl, 2), "h:1", "dllm", *args, None, 8)
    except FileNotFoundError:
        pytest.skip("perf_analyzer is not installed")
    assert conc[1:7] == ["-m", "dllm", "-u", "h:1", "-i", "grpc"] and "--streaming" in conc
    assert conc[-2:] == ["--concurrency-range", "4"]
    rate = perf_analyzer.command(perf_analyzer.Level("rate", 2.5, wl, 2), "h:1", "dllm", *args, None, 8)
    assert "--request-distribution" in rate and "2.5" in rate
    replay = perf_analyzer.command(perf_analyzer.Level("replay", None, wl, 2), "h:1", "dllm", *args,
                                   tmp_path / "i.txt", 8)
    assert "--request-intervals" in replay and replay[replay.index("--request-count") + 1] == "2"


def test_gpu_runbook_dry_run(tmp_path):
    """The runbook's CPU dry run (tiny size): the same script the GPU machines run, end to end."""
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_runbook.sh"
    proc = subprocess.run(["bash", str(script), str(tmp_path), "--dry-run", "--variants", "fcfs",
                           "--scenarios", "burst", "--threads", "1", "--no-plots"],
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "TAG": "dry"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(next(tmp_path.glob("*-dry-tiny.json")).read_text())
    assert doc["results"][0]["summary"]["completed"] == 6
    # The device model fitted to the run's iterations comes with it.
    assert json.loads((tmp_path / "device.json").read_text())["report"]["iterations"] == doc["results"][0][
        "engine"]["iterations"]
    assert "torch" in (tmp_path / "environment.txt").read_text()


def test_length_accuracy_scores_each_length(tmp_path):
    from benchmarks import length_accuracy

    out = length_accuracy.main(["--per-task", "1", "--lengths", "16,48", "--threads", "1",
                                "--json", str(tmp_path / "len.json")])
    assert [r["max_tokens"] for r in out["rows"]] == [16, 48]
    # The largest divisor up to the bundled model's block_length (16, its generation_config.json).
    assert [r["block_length"] for r in out["rows"]] == [16, 16]
    assert all(0.0 <= r["mean_accuracy"] <= 1.0 and set(r["accuracy"]) == set(tasks.TASKS) for r in out["rows"])
    assert json.loads((tmp_path / "len.json").read_text())["rows"] == out["rows"]
