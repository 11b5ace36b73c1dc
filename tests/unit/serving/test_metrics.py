"""The metric series: one set per stub process (never shared between instances), gauges set only when
they change, nothing called after close."""

import gc
import weakref

from backend.serving.metrics import ServingMetrics
from tests.unit.serving.fakes import Metric, MetricFamily, pb


def test_each_instance_and_process_has_its_own_series():
    MetricFamily.every.clear()
    old = ServingMetrics(pb, "dllm", "1", "dllm_0", pid=100)
    new = ServingMetrics(pb, "dllm", "1", "dllm_0", pid=200)  # the same instance, loaded again
    other = ServingMetrics(pb, "dllm", "1", "dllm_1", pid=300)  # a second instance
    for m in (old, new, other):
        m.request_finished("eos", 3, 4, 0.5, 2)
    series = {}
    for family in MetricFamily.every:
        for metric in family.metrics:
            series.setdefault((family.name, tuple(sorted(metric.labels.items()))), []).append(metric)
    assert len(series) == 3 * 21  # 21 each: 7 counters (one finish reason), 9 histograms, 5 gauges
    assert all(len(owners) == 1 for owners in series.values())  # no two owners share a series
    gauge = next(f for f in MetricFamily.every if f.name == "dllm:kv_pages_used").metrics[0]
    assert gauge.labels == {"model": "dllm", "version": "1", "instance": "dllm_0", "pid": "100"}


def test_gauges_are_set_only_when_they_change(monkeypatch):
    MetricFamily.created.clear()
    calls = []
    monkeypatch.setattr(Metric, "set", lambda self, v: calls.append(v))
    m = ServingMetrics(pb, "dllm", "1", "dllm_0")
    stats = {"running": 1, "waiting": 0, "kv_pages_used": 5, "kv_pages_total": 8}
    m.set_engine_stats(stats)
    m.set_engine_stats(stats)  # unchanged: no call into the server
    m.set_engine_stats({**stats, "kv_pages_used": 0})
    assert sorted(calls) == [0.0, 0.0, 1.0, 5.0, 8.0]


def test_close_releases_every_series_and_later_calls_do_nothing(monkeypatch):
    MetricFamily.created.clear()
    m = ServingMetrics(pb, "dllm", "1", "dllm_0")
    m.request_finished("stop", 3, 4, 0.5, 2)
    refs = [weakref.ref(x) for f in MetricFamily.created.values() for x in f.metrics]
    families = [weakref.ref(f) for f in MetricFamily.created.values()]
    MetricFamily.created.clear()
    MetricFamily.every.clear()
    calls = []
    for name in ("increment", "set", "observe"):
        monkeypatch.setattr(Metric, name, lambda self, v, name=name: calls.append(name))
    m.close()
    m.request_finished("eos", 3, 4, 0.5, 2)
    m.observe_first_delta(0.1)
    m.set_engine_stats({"running": 3})
    gc.collect()
    assert calls == []
    assert all(r() is None for r in refs + families)  # the server deletes them: nothing holds them


def test_iterations_feed_the_histogram_and_token_counters():
    from backend.engine.scheduling.cost_refit import IterationRecord

    MetricFamily.created.clear()
    m = ServingMetrics(pb, "dllm", "1", "dllm_0")
    m.observe_iterations([IterationRecord(0.02, 0.025, 512, 0, 1, host_seconds=0.001),
                          IterationRecord(0.006, 0.005, 0, 64, 2, host_seconds=0.0005)])
    m.observe_iterations([])
    fam = MetricFamily.created
    assert fam["dllm:iteration_seconds"].metrics[0].observed == [0.02, 0.006]
    assert fam["dllm:refresh_tokens_total"].metrics[0].value == 512
    assert fam["dllm:reuse_tokens_total"].metrics[0].value == 64
    assert abs(fam["dllm:iteration_predicted_seconds_total"].metrics[0].value - 0.03) < 1e-12
    assert abs(fam["dllm:iteration_host_seconds_total"].metrics[0].value - 0.0015) < 1e-12
