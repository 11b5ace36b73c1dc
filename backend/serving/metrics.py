"""The `dllm:` Prometheus metrics, through Triton's Python-backend metric API.

Triton serves them on its metrics port next to its own `nv_*` metrics. Only the response thread
updates them (never the engine loop): each update is a call into the backend's C++ side.

`pb` is `triton_python_backend_utils`, passed in so that this module imports without Triton.
"""

from __future__ import annotations

# Bucket edges in seconds: a tiny model on a CPU answers in milliseconds, an 8B model under load in
# minutes.
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0]
TOKENS_PER_FORWARD_BUCKETS = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0]

COUNTERS = {
    "requests": ("dllm:requests_total", "Finished requests, by finish reason (eos, length, stop, abort, error)"),
    "prompt_tokens": ("dllm:prompt_tokens_total", "Prompt tokens of finished requests"),
    "generation_tokens": ("dllm:generation_tokens_total", "Generated (committed) tokens of finished requests"),
}
HISTOGRAMS = {
    "first_delta": ("dllm:time_to_first_token_seconds", "Time from arrival to the first committed text",
                    LATENCY_BUCKETS),
    "between_deltas": ("dllm:time_between_deltas_seconds", "Time between successive committed texts of a request",
                       LATENCY_BUCKETS),
    "end_to_end": ("dllm:e2e_request_latency_seconds", "Time from arrival to the final response", LATENCY_BUCKETS),
    "tokens_per_forward": ("dllm:tokens_per_forward", "Tokens committed per model forward, per finished request",
                           TOKENS_PER_FORWARD_BUCKETS),
}
GAUGES = {
    "running": ("dllm:num_requests_running", "Requests in the engine's running set"),
    "waiting": ("dllm:num_requests_waiting", "Requests waiting for admission"),
    "kv_pages_used": ("dllm:kv_pages_used", "K/V pool pages in use"),
    "kv_pages_total": ("dllm:kv_pages_total", "K/V pool pages in all"),
}


class ServingMetrics:
    def __init__(self, pb, model: str, version: str, instance: str):
        self._labels = {"model": model, "version": str(version)}
        family = pb.MetricFamily
        self._families = {}
        for key, (name, doc) in COUNTERS.items():
            self._families[key] = family(name=name, description=doc, kind=family.COUNTER)
        for key, (name, doc, _) in HISTOGRAMS.items():
            self._families[key] = family(name=name, description=doc, kind=family.HISTOGRAM)
        for key, (name, doc) in GAUGES.items():
            self._families[key] = family(name=name, description=doc, kind=family.GAUGE)
        self._prompt = self._families["prompt_tokens"].Metric(labels=self._labels)
        self._generated = self._families["generation_tokens"].Metric(labels=self._labels)
        self._hist = {key: self._families[key].Metric(labels=self._labels, buckets=buckets)
                      for key, (_, _, buckets) in HISTOGRAMS.items()}
        # Gauges carry the instance too: with several instances each reports its own engine.
        gauge_labels = {**self._labels, "instance": instance}
        self._gauges = {key: self._families[key].Metric(labels=gauge_labels) for key in GAUGES}
        self._by_reason = {}

    def request_finished(self, finish_reason: str | None, prompt_tokens: int, output_tokens: int,
                         end_to_end: float | None, forwards: int) -> None:
        reason = finish_reason or "unknown"
        if reason not in self._by_reason:
            self._by_reason[reason] = self._families["requests"].Metric(
                labels={**self._labels, "finish_reason": reason})
        self._by_reason[reason].increment(1)
        self._prompt.increment(prompt_tokens)
        self._generated.increment(output_tokens)
        if end_to_end is not None:
            self._hist["end_to_end"].observe(end_to_end)
        if forwards > 0 and output_tokens > 0:
            self._hist["tokens_per_forward"].observe(output_tokens / forwards)

    def observe_first_delta(self, seconds: float) -> None:
        self._hist["first_delta"].observe(seconds)

    def observe_between_deltas(self, seconds: float) -> None:
        self._hist["between_deltas"].observe(seconds)

    def set_engine_stats(self, stats: dict) -> None:
        for key, gauge in self._gauges.items():
            if key in stats:
                gauge.set(float(stats[key]))

    def close(self) -> None:
        # Drop every reference to backend-side objects so that the model can unload.
        self._gauges.clear()
        self._hist.clear()
        self._by_reason.clear()
        self._families.clear()
        self._prompt = self._generated = None
