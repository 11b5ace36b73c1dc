"""Stand-ins for triton_python_backend_utils and the async engine, recording what is sent."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from backend.engine.outputs import RequestOutput

FINAL = 1


class TritonError:
    INVALID_ARG, INTERNAL, UNAVAILABLE = "INVALID_ARG", "INTERNAL", "UNAVAILABLE"

    def __init__(self, message, code=INTERNAL):
        self.msg, self.code = message, code

    def message(self):
        return self.msg


class Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, array


class InferenceResponse:
    def __init__(self, output_tensors=None, error=None):
        self.outputs = {t.name: t.array for t in output_tensors or []}
        self.error = error


class Metric:
    def __init__(self, labels, buckets=None):
        self.labels, self.buckets, self.value, self.observed = labels, buckets, 0.0, []

    def increment(self, v):
        self.value += v

    def set(self, v):
        self.value = v

    def observe(self, v):
        self.observed.append(v)


class MetricFamily:
    COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
    created: dict = {}  # name -> the latest family of that name
    every: list = []  # every family made, in order (the server shares a series between families)

    def __init__(self, name, description, kind):
        self.name, self.kind, self.metrics = name, kind, []
        MetricFamily.created[name] = self
        MetricFamily.every.append(self)

    def Metric(self, labels, buckets=None):  # noqa: N802 (Triton's name)
        if (self.kind == self.HISTOGRAM) != (buckets is not None):
            raise ValueError("buckets are for histograms only")
        m = Metric(labels, buckets)
        self.metrics.append(m)
        return m


pb = SimpleNamespace(TritonError=TritonError, Tensor=Tensor, InferenceResponse=InferenceResponse,
                     MetricFamily=MetricFamily, TRITONSERVER_RESPONSE_COMPLETE_FINAL=FINAL)


class Sender:
    def __init__(self):
        self.sent = []  # (response or None, flags)
        self.cancelled = False
        self.done = threading.Event()

    def send(self, response=None, flags=0):
        self.sent.append((response, flags))
        if flags & FINAL:
            self.done.set()

    def is_cancelled(self):
        return self.cancelled

    def texts(self):
        return [r.outputs["text_output"][0].decode() for r, _ in self.sent if r is not None and r.error is None]


class FakeEngine:
    """Records submissions; the test plays the engine loop by calling `emit`."""

    def __init__(self, reject: str | None = None, broken: Exception | None = None):
        self.callbacks, self.aborted, self.reject, self.broken = {}, [], reject, broken

    def validate(self, prompt_ids, params):
        if self.reject:
            raise ValueError(self.reject)

    def submit_validated(self, request, request_id=None, on_output=None):
        if self.reject:  # an engine refusing a request anyway (the responder must answer INVALID_ARG)
            raise ValueError(self.reject)
        if self.broken is not None:
            raise self.broken
        self.callbacks[request_id] = on_output

    def abort(self, request_id):
        self.aborted.append(request_id)
        self.emit(request_id, [], finished=True, reason="abort")

    def stats(self):
        return {"running": len(self.callbacks), "waiting": 0, "kv_pages_used": 0, "kv_pages_total": 8}

    def take_iterations(self):
        out, self.iterations = getattr(self, "iterations", []), []
        return out

    def emit(self, request_id, ids, finished=False, reason=None, total=0, error=None):
        self.callbacks[request_id](RequestOutput(request_id, list(ids), finished, reason, error, 3, total, 2))
