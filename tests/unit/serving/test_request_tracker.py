"""Streaming rules: no empty first chunk, FINAL on the last response, one response when not streaming."""

from backend.engine.outputs import RequestOutput
from backend.serving.inputs import GenerateRequest
from backend.serving.request_tracker import RequestTracker


def decode(ids):
    return "".join(chr(ord("a") + t) for t in ids)


def out(ids, total, finished=False, reason=None, error=None):
    return RequestOutput("r", ids, finished, reason, error, 2, total, 4)


def test_streaming_sends_each_delta_and_a_final_with_the_reason():
    t = RequestTracker(GenerateRequest("p", stream=True, exclude_input_in_output=True), 2, decode)
    assert t.on_output(out([], 0)) is None  # nothing committed yet: no empty chunk
    r1 = t.on_output(out([0, 1], 2))
    assert (r1.text, r1.final, r1.num_output_tokens) == ("ab", False, 2)
    r2 = t.on_output(out([2], 3, finished=True, reason="length"))
    assert (r2.text, r2.final, r2.finish_reason, r2.num_output_tokens) == ("c", True, "length", 1)
    assert t.on_output(out([3], 4)) is None  # nothing after the final one


def test_streaming_final_may_carry_no_text():
    t = RequestTracker(GenerateRequest("p", stream=True, exclude_input_in_output=True), 2, decode)
    t.on_output(out([0], 1))
    r = t.on_output(out([], 1, finished=True, reason="eos"))
    assert (r.text, r.final, r.finish_reason, r.num_output_tokens) == ("", True, "eos", 0)


def test_non_streaming_sends_one_response_with_the_prompt_by_default():
    t = RequestTracker(GenerateRequest("p: "), 2, decode)
    assert t.on_output(out([0], 1)) is None
    r = t.on_output(out([1], 2, finished=True, reason="eos"))
    assert (r.text, r.final, r.num_output_tokens) == ("p: ab", True, 2)


def test_non_streaming_without_the_prompt():
    t = RequestTracker(GenerateRequest("p: ", exclude_input_in_output=True), 2, decode)
    r = t.on_output(out([0, 1], 2, finished=True, reason="length"))
    assert r.text == "ab"


def test_engine_error_becomes_an_internal_error_reply():
    t = RequestTracker(GenerateRequest("p", stream=True), 2, decode)
    r = t.on_output(out([], 0, finished=True, reason="error", error="RuntimeError: boom"))
    assert r.final and r.error == "internal error: RuntimeError: boom"


def test_timing_for_metrics():
    now = [0.0]
    t = RequestTracker(GenerateRequest("p", stream=True), 2, decode, clock=lambda: now[0])
    now[0] = 0.5
    t.on_output(out([0], 1))
    now[0] = 0.75
    t.on_output(out([1], 2))
    now[0] = 1.0
    t.on_output(out([], 2, finished=True, reason="eos"))
    assert t.timing.first_delta == 0.5 and t.take_gaps() == [0.25] and t.timing.end_to_end == 1.0
    assert t.take_gaps() == []
