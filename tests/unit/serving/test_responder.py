"""The response thread with a fake engine and fake Triton objects: sending, errors, cancellation, metrics."""

import os
import time

import pytest

from backend.engine.async_engine import EngineDead
from backend.serving.inputs import GenerateRequest
from backend.serving.metrics import ServingMetrics
from backend.serving.request_tracker import RequestTracker
from backend.serving.responder import Responder
from tests.unit.serving.fakes import FINAL, FakeEngine, MetricFamily, Sender, pb


def decode(ids):
    return "".join(chr(ord("a") + t) for t in ids)


@pytest.fixture
def setup():
    MetricFamily.created.clear()
    engine = FakeEngine()
    metrics = ServingMetrics(pb, "dllm", "1", "dllm_0")
    responder = Responder(engine, pb, metrics, poll_interval=0.01, stats_interval=0.01)
    responder.start()
    yield engine, responder
    responder.stop()


def submit(responder, rid, stream=True, **flags):
    sender = Sender()
    req = GenerateRequest("p", stream=stream, exclude_input_in_output=True, **flags)
    responder.submit(rid, sender, RequestTracker(req, 3, decode), object())
    return sender


def wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


def test_stream_of_deltas_then_final(setup):
    engine, responder = setup
    sender = submit(responder, "a", return_finish_reason=True, return_num_output_tokens=True,
                    return_num_input_tokens=True)
    engine.emit("a", [0, 1], total=2)
    engine.emit("a", [2], finished=True, reason="length", total=3)
    assert sender.done.wait(5)
    assert sender.texts() == ["ab", "c"]
    assert [flags for _, flags in sender.sent] == [0, FINAL]
    last = sender.sent[-1][0].outputs
    assert last["finish_reason"][0] == b"length" and last["num_output_tokens"][0] == 1
    assert last["num_input_tokens"][0] == 3
    wait(lambda: responder.num_active == 0)
    finished = MetricFamily.created["dllm:requests_total"].metrics
    assert [(m.labels["finish_reason"], m.value) for m in finished] == [("length", 1)]
    assert MetricFamily.created["dllm:generation_tokens_total"].metrics[0].value == 3
    assert MetricFamily.created["dllm:tokens_per_forward"].metrics[0].observed == [1.5]


def test_cancellation_aborts_in_the_engine_and_still_sends_final(setup):
    engine, responder = setup
    sender = submit(responder, "c")
    engine.emit("c", [0], total=1)
    wait(lambda: len(sender.sent) == 1)
    sender.cancelled = True
    assert sender.done.wait(5)
    assert engine.aborted == ["c"]
    assert sender.sent[-1] == (None, FINAL)  # a bare FINAL: the client stopped listening


def test_engine_error_is_internal_for_that_request_only(setup):
    engine, responder = setup
    bad, good = submit(responder, "bad"), submit(responder, "good", stream=False)
    engine.emit("bad", [], finished=True, reason="error", error="RuntimeError: boom")
    engine.emit("good", [0], finished=True, reason="eos", total=1)
    assert bad.done.wait(5) and good.done.wait(5)
    err = bad.sent[-1][0].error
    assert err.code == pb.TritonError.INTERNAL and "boom" in err.message()
    assert good.texts() == ["a"]


def test_abort_without_cancellation_means_unloading(setup):
    engine, responder = setup
    sender = submit(responder, "u")
    engine.emit("u", [], finished=True, reason="abort")
    assert sender.done.wait(5)
    assert sender.sent[-1][0].error.code == pb.TritonError.UNAVAILABLE


@pytest.mark.parametrize("failure, code", [(RuntimeError("engine loop is gone"), "INTERNAL"),
                                           (EngineDead("the engine has stopped (IndexError: 3)"), "INTERNAL"),
                                           (ValueError("max_tokens: too long"), "INVALID_ARG"),
                                           (ValueError("Overflow when unpacking long long"), "INTERNAL")])
def test_failure_after_registration_is_answered_by_the_response_thread(failure, code):
    # Once registered, only the response thread touches the sender (Triton 2.51 crashes when a
    # closed sender is polled), so submit does not raise and that thread sends the error.
    responder = Responder(FakeEngine(broken=failure), pb, None, poll_interval=0.01)
    responder.start()
    sender = Sender()
    responder.submit("x", sender, RequestTracker(GenerateRequest("p"), 1, decode), object())
    assert sender.done.wait(5)
    responder.stop()
    (response, flags), = sender.sent
    assert flags == FINAL and response.error.code == code and str(failure) in response.error.message()


def test_stop_closes_requests_the_engine_never_finished():
    engine = FakeEngine()
    responder = Responder(engine, pb, None, poll_interval=0.01)
    responder.start()
    sender = submit(responder, "left")
    responder.stop()
    assert sender.sent[-1][1] == FINAL and sender.sent[-1][0].error.code == pb.TritonError.UNAVAILABLE


def test_gauges_follow_engine_stats(setup):
    engine, responder = setup
    submit(responder, "g")
    gauges = {f: MetricFamily.created[f].metrics[0] for f in ("dllm:num_requests_running", "dllm:kv_pages_total")}
    wait(lambda: gauges["dllm:num_requests_running"].value == 1)
    assert gauges["dllm:kv_pages_total"].value == 8
    assert gauges["dllm:kv_pages_total"].labels == {"model": "dllm", "version": "1", "instance": "dllm_0",
                                                    "pid": str(os.getpid())}
