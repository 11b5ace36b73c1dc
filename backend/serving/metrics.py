"""The `dllm:` Prometheus metrics, through Triton's Python-backend metric API.

Triton serves them on its metrics port next to its own `nv_*` metrics. Only the response thread
updates them (never the engine loop): each update is a call into the backend's C++ side.

Two hazards of Triton 2.51's metric API shape this class:
- Series are shared by name and labels across model instances, and the first owner to delete one
  frees it under the others (heap corruption in `Metric::Observe` when an instance unloads while its
  successor, same labels, is loaded). Every series therefore carries the instance name and the
  stub's process id, so no two live instances ever share one.
- A metric call is a synchronous round trip to the server that holds the stub's lock on its
  messages and the GIL; if the server exits in the middle, the stub deadlocks and never exits. So
  gauges are set only when they change, no call is made once the server process is gone, and after
  `close` (finalize) every call is a no-op.

`pb` is `triton_python_backend_utils`, passed in so that this module imports without Triton.
"""

from __future__ import annotations

import os
import threading

# Bucket edges in seconds: a tiny model on a CPU answers in milliseconds, an 8B model under load in
# minutes.
LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0]
TOKENS_PER_FORWARD_BUCKETS = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0]
# One engine iteration: a few milliseconds (a Reuse step) to a second or more (Refreshes of long prompts).
# Token counts of one request, vLLM's 1-2-5 series (vllm:request_prompt_tokens and friends).
TOKEN_COUNT_BUCKETS = [m * 10 ** e for e in range(6) for m in (1, 2, 5)]
N_BUCKETS = [1, 2, 5, 10, 20]  # vLLM's vllm:request_params_n
ITERATION_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12]

COUNTERS = {
    "requests": ("dllm:requests_total", "Finished requests, by finish reason (eos, length, stop, abort, error)"),
    "prompt_tokens": ("dllm:prompt_tokens_total", "Prompt tokens of finished requests"),
    "generation_tokens": ("dllm:generation_tokens_total", "Generated (committed) tokens of finished requests"),
    "refresh_tokens": ("dllm:refresh_tokens_total", "Tokens computed by Refresh steps (whole sequences)"),
    "reuse_tokens": ("dllm:reuse_tokens_total", "Tokens computed by Reuse steps (blocks attending to cached K/V)"),
    "predicted_seconds": ("dllm:iteration_predicted_seconds_total",
                          "Predicted iteration time, summed (compare with dllm:iteration_seconds_sum)"),
    "host_seconds": ("dllm:iteration_host_seconds_total",
                     "Engine time around the forwards (scheduling, commits, stop checks, outputs), summed"),
}
HISTOGRAMS = {
    "first_delta": ("dllm:time_to_first_token_seconds", "Time from arrival to the first committed text",
                    LATENCY_BUCKETS),
    "between_deltas": ("dllm:time_between_deltas_seconds", "Time between successive committed texts of a request",
                       LATENCY_BUCKETS),
    "end_to_end": ("dllm:e2e_request_latency_seconds", "Time from arrival to the final response", LATENCY_BUCKETS),
    # vLLM's mean time per output token of a request: (end to end - first token) / (tokens - 1). A
    # diffusion model commits tokens in groups, so this is a per-request mean, not a per-token gap.
    "time_per_output_token": ("dllm:time_per_output_token_seconds",
                              "Per finished request: (end to end - time to first token) / (generated tokens - 1)",
                              LATENCY_BUCKETS),
    "tokens_per_forward": ("dllm:tokens_per_forward", "Tokens committed per model forward, per finished request",
                           TOKENS_PER_FORWARD_BUCKETS),
    # vLLM's per-request histograms, under our prefix (a vLLM dashboard needs only the prefix changed).
    "request_prompt_tokens": ("dllm:request_prompt_tokens", "Prompt tokens of each finished request",
                              TOKEN_COUNT_BUCKETS),
    "request_generation_tokens": ("dllm:request_generation_tokens",
                                  "Generated tokens of each finished request (all n answers)", TOKEN_COUNT_BUCKETS),
    "request_params_n": ("dllm:request_params_n", "The n parameter of each finished request", N_BUCKETS),
    "iteration": ("dllm:iteration_seconds", "Wall time of one engine iteration (forward and decode)",
                  ITERATION_BUCKETS),
}
GAUGES = {
    "running": ("dllm:num_requests_running", "Requests in the engine's running set"),
    "waiting": ("dllm:num_requests_waiting", "Requests waiting for admission"),
    "kv_pages_used": ("dllm:kv_pages_used", "K/V pool pages in use"),
    "kv_pages_total": ("dllm:kv_pages_total", "K/V pool pages in all"),
    # Triton 2.51 never asks the model whether it is ready, so a stopped engine loop shows here (0) for a
    # readiness probe (backend/server/probe.py) to read.
    "engine_up": ("dllm:engine_up", "1 while the instance's engine loop serves, 0 once it has stopped"),
}


def custom_metrics_enabled(model_config: dict) -> bool:
    """The vLLM backend's switch: the `REPORT_CUSTOM_METRICS` parameter of config.pbtxt, "true" (any
    case) to report; absent or anything else: no dllm: series at all. Our config.pbtxt sets it."""
    spec = (model_config.get("parameters") or {}).get("REPORT_CUSTOM_METRICS")
    value = spec.get("string_value", "") if isinstance(spec, dict) else str(spec or "")
    return value.strip().lower() == "true"


class ServingMetrics:
    def __init__(self, pb, model: str, version: str, instance: str, pid: int | None = None):
        self._labels = {"model": model, "version": str(version), "instance": instance,
                        "pid": str(os.getpid() if pid is None else pid)}
        self._server_pid = os.getppid()
        self._lock = threading.Lock()
        self._closed = False
        family = pb.MetricFamily
        self._families = {}
        for key, (name, doc) in COUNTERS.items():
            self._families[key] = family(name=name, description=doc, kind=family.COUNTER)
        for key, (name, doc, _) in HISTOGRAMS.items():
            self._families[key] = family(name=name, description=doc, kind=family.HISTOGRAM)
        for key, (name, doc) in GAUGES.items():
            self._families[key] = family(name=name, description=doc, kind=family.GAUGE)
        self._counters = {key: self._families[key].Metric(labels=self._labels)
                          for key in ("prompt_tokens", "generation_tokens", "refresh_tokens", "reuse_tokens",
                                      "predicted_seconds", "host_seconds")}
        self._hist = {key: self._families[key].Metric(labels=self._labels, buckets=buckets)
                      for key, (_, _, buckets) in HISTOGRAMS.items()}
        self._gauges = {key: self._families[key].Metric(labels=self._labels) for key in GAUGES}
        self._gauge_values: dict[str, float] = {}
        self._by_reason = {}

    def _usable(self) -> bool:
        """Whether a call may be made now (call with the lock held)."""
        return not self._closed and os.getppid() == self._server_pid

    def request_finished(self, finish_reason: str | None, prompt_tokens: int, output_tokens: int,
                         end_to_end: float | None, forwards: int, n: int = 1, first_delta: float | None = None
                         ) -> None:
        with self._lock:
            if not self._usable():
                return
            reason = finish_reason or "unknown"
            if reason not in self._by_reason:
                self._by_reason[reason] = self._families["requests"].Metric(
                    labels={**self._labels, "finish_reason": reason})
            self._by_reason[reason].increment(1)
            self._counters["prompt_tokens"].increment(prompt_tokens)
            self._counters["generation_tokens"].increment(output_tokens)
            if end_to_end is not None:
                self._hist["end_to_end"].observe(end_to_end)
                if first_delta is not None and output_tokens > 1:
                    per_token = max(0.0, end_to_end - first_delta) / (output_tokens - 1)
                    self._hist["time_per_output_token"].observe(per_token)
            self._hist["request_prompt_tokens"].observe(prompt_tokens)
            self._hist["request_generation_tokens"].observe(output_tokens)
            self._hist["request_params_n"].observe(n)
            if forwards > 0 and output_tokens > 0:
                self._hist["tokens_per_forward"].observe(output_tokens / forwards)

    def observe_first_delta(self, seconds: float) -> None:
        self._observe("first_delta", seconds)

    def observe_between_deltas(self, seconds: float) -> None:
        self._observe("between_deltas", seconds)

    def _observe(self, key: str, seconds: float) -> None:
        with self._lock:
            if self._usable():
                self._hist[key].observe(seconds)

    def observe_iterations(self, iterations: list) -> None:
        """Engine iterations (backend.engine.scheduling.cost_refit.IterationRecord) since the last call."""
        if not iterations:
            return
        with self._lock:
            if not self._usable():
                return
            for it in iterations:
                self._hist["iteration"].observe(it.seconds)
            self._counters["refresh_tokens"].increment(sum(it.refresh_tokens for it in iterations))
            self._counters["reuse_tokens"].increment(sum(it.reuse_tokens for it in iterations))
            self._counters["predicted_seconds"].increment(sum(it.predicted for it in iterations))
            self._counters["host_seconds"].increment(sum(it.host_seconds for it in iterations))

    def set_engine_stats(self, stats: dict) -> None:
        with self._lock:
            for key, gauge in self._gauges.items():
                if key in stats and self._gauge_values.get(key) != float(stats[key]) and self._usable():
                    gauge.set(float(stats[key]))
                    self._gauge_values[key] = float(stats[key])

    def close(self) -> None:
        """Delete every series (the instance is unloading: its successor must not see them), metrics
        before their families, and make any later call a no-op."""
        with self._lock:
            self._closed = True
            self._gauges.clear()
            self._hist.clear()
            self._by_reason.clear()
            self._counters.clear()
            self._families.clear()
