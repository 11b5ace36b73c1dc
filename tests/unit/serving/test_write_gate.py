"""The write gate (no response written while the model is unavailable) alone with a fake clock, and in
the response thread with a fake engine and fake Triton objects."""

import threading
import time

from backend.serving.inputs import GenerateRequest
from backend.serving.request_tracker import RequestTracker
from backend.serving.responder import Responder
from backend.serving.write_gate import WriteGate
from tests.unit.serving.fakes import FINAL, FakeEngine, Sender, TritonError, pb


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Server:
    """is_model_ready: the answer the test sets, counting the calls."""

    def __init__(self):
        self.ready, self.calls, self.stopping = True, 0, False

    def __call__(self):
        self.calls += 1
        if self.stopping:
            raise RuntimeError("Server not ready")
        return self.ready


def gate(**kw):
    clock, server, lines = Clock(), Server(), []
    return WriteGate(server, clock=clock, log_info=lines.append, **kw), clock, server, lines


def test_without_a_check_always_open():
    assert WriteGate().open()


def test_ready_answer_is_reused_briefly():
    g, clock, server, _ = gate(reuse=0.005)
    assert g.open() and g.open() and server.calls == 1
    clock.t = 0.006
    assert g.open() and server.calls == 2


def test_holds_while_unavailable_then_opens_after_settling():
    g, clock, server, lines = gate(settle=0.25)
    server.ready = False
    assert not g.open() and not g.open() and g.holding
    assert len(lines) == 1 and "holding responses" in lines[0]
    server.ready, clock.t = True, 5.0
    assert not g.open()  # back, but refusals written just before may still be in flight
    clock.t = 5.3
    assert g.open() and not g.holding
    assert "available again" in lines[-1] and g.holds == 1


def test_hold_limit_then_open_until_the_model_is_back():
    g, clock, server, lines = gate(hold_limit=60.0, reuse=0.0)
    server.ready = False
    assert not g.open()
    clock.t = 59.0
    assert not g.open()
    clock.t = 60.0
    assert g.open() and "hold limit" in lines[-1]
    clock.t = 61.0
    assert g.open()  # gave up for this absence: the instance could not finish otherwise
    server.ready = True
    assert g.open()
    server.ready, clock.t = False, 70.0
    assert not g.open() and g.holds == 2  # the next absence holds again


def test_server_stopping_opens():
    g, clock, server, lines = gate()
    server.ready = False
    assert not g.open()
    server.stopping = True
    assert g.open() and "server is stopping" in lines[-1]


def test_never_asks_again_once_the_server_is_stopping():
    # Triton 2.51: the second readiness call of a stopping server crashes the stub (SIGSEGV).
    g, clock, server, _ = gate(reuse=0.005)
    server.stopping = True
    assert g.open() and server.calls == 1
    for t in (1.0, 10.0, 100.0):
        clock.t = t
        assert g.open()
    assert server.calls == 1


def submit(responder, rid):
    sender = Sender()
    req = GenerateRequest("p", stream=True, exclude_input_in_output=True)
    responder.submit(rid, sender, RequestTracker(req, 3, lambda ids: "".join(chr(97 + t) for t in ids)), object())
    return sender


def test_responder_writes_nothing_while_the_model_is_unavailable():
    server = Server()
    responder = Responder(FakeEngine(), pb, poll_interval=0.01,
                          gate=WriteGate(server, settle=0.0, reuse=0.0, log_info=lambda _: None))
    engine = responder._engine
    responder.start()
    try:
        a = submit(responder, "a")
        engine.emit("a", [0], total=1)
        end = time.monotonic() + 5
        while not a.sent:
            assert time.monotonic() < end
            time.sleep(0.005)
        server.ready = False
        b = submit(responder, "b")
        engine.emit("a", [1], total=2)
        engine.emit("a", [2], finished=True, reason="length", total=3)
        responder.refuse("c", c := Sender(), "text_input: missing", invalid=True)
        engine.emit("b", [3], finished=True, reason="length", total=1)
        time.sleep(0.2)
        assert len(a.sent) == 1 and not b.sent and not c.sent  # held, the engine kept going
        server.ready = True
        assert a.done.wait(5) and b.done.wait(5) and c.done.wait(5)
        assert a.texts() == ["a", "b", "c"] and [f for _, f in a.sent] == [0, 0, FINAL]  # in order, as held
        assert b.texts() == ["d"] and [f for _, f in b.sent] == [FINAL]
        assert c.sent[0][0].error.code == TritonError.INVALID_ARG and c.sent[0][1] == FINAL
    finally:
        assert responder.stop()


def test_stop_sends_what_is_held():
    server = Server()
    server.ready = False
    responder = Responder(FakeEngine(), pb, poll_interval=0.01, gate=WriteGate(server, log_info=lambda _: None))
    responder.start()
    a = submit(responder, "a")
    responder._engine.emit("a", [0], finished=True, reason="length", total=1)
    time.sleep(0.1)
    assert not a.sent
    stopped = threading.Thread(target=responder.stop)
    stopped.start()
    assert a.done.wait(5) and a.texts() == ["a"]
    stopped.join(5)
