"""The response thread: engine outputs in, Triton responses out.

The engine's loop only drops each output into a queue (its `on_output` callback), so detokenizing,
building tensors, sending, checking cancellation and updating metrics never slow an engine iteration.
Everything about active requests is touched by this thread alone: `submit` (on Triton's `execute`
thread) registers a request through the same queue, ahead of the engine's first output for it, and
`refuse` hands over the requests `execute` refuses. Nothing is written while the model is unavailable
to new requests (write_gate.py: Triton 2.51 crashes otherwise); the queued work waits, in order.

`pb` is `triton_python_backend_utils`, passed in so that this module imports (and is unit-tested)
without Triton.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass

from backend.serving.answers import AnswerGroup, GroupReply
from backend.serving.intake import names_a_field
from backend.serving.output_tensors import output_tensors
from backend.serving.request_tracker import RequestTracker
from backend.serving.write_gate import WriteGate

log = logging.getLogger(__name__)

_NEW, _OUTPUT, _FAIL, _STOP = "new", "output", "fail", "stop"


@dataclass
class _Active:
    sender: object  # the request's response sender
    tracker: AnswerGroup | None  # None: refused at execute, only an error to send
    sub_ids: list  # the engine request of each answer (one unless n > 1)
    cancelled: bool = False
    closed: bool = False  # its final response has gone out: later outputs are bookkeeping only
    first_delta_reported: bool = False
    checked_at: float = 0.0  # last is_cancelled() call: each costs a round trip to the server process


class Responder:
    def __init__(self, engine, pb, metrics=None, poll_interval: float = 0.1, stats_interval: float = 0.5,
                 log_info=None, gate: WriteGate | None = None):
        """`engine`: a backend.engine.async_engine.AsyncEngine (submit, abort, stats). `poll_interval`: how often
        requests without output are checked for cancellation (the client gave up or disconnected).
        `log_info`: where to report cancellations (Triton's log), one line each. `gate`: when writes may
        go out (default: always)."""
        self._engine = engine
        self.gate = gate or WriteGate()
        self._log_info = log_info or log.info
        self._pb = pb
        self._metrics = metrics
        self._poll = poll_interval
        self._stats_interval = stats_interval
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._active: dict[str, _Active] = {}
        self._thread = threading.Thread(target=self._run, name="dllm-responder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, request_id: str, sender, tracker: RequestTracker | AnswerGroup, request) -> None:
        """Hand a request to the engine as the intake's validation built it (`Engine.validate`: nothing
        checks it again; see intake.py). From
        here on the stream's sender belongs to the response thread alone, failures included:
        polling is_cancelled() on a sender that another thread has closed crashes tritonserver 2.51
        (segfault in TRITONBACKEND_ResponseFactoryIsCancelled). An engine that refuses the request
        anyway (a ValueError naming the field) gets INVALID_ARG; any other failure (the engine loop
        has died) INTERNAL. `request`: one engine request, or a list of them (the n answers of
        `tracker`, an AnswerGroup)."""
        requests = request if isinstance(request, list) else [request]
        if isinstance(tracker, RequestTracker):
            tracker = AnswerGroup([tracker], [request_id])
        entry = _Active(sender, tracker, list(tracker.sub_ids))
        self._queue.put((_NEW, request_id, entry))
        try:
            for sub_id, req in zip(entry.sub_ids, requests, strict=True):
                self._engine.submit_validated(req, request_id=sub_id,
                                              on_output=lambda out, sid=sub_id: self._queue.put((_OUTPUT, sid, out)))
        except Exception as e:
            invalid = isinstance(e, ValueError) and names_a_field(str(e))
            message = str(e) if invalid else f"internal error: {type(e).__name__}: {e}"
            self._queue.put((_FAIL, request_id, (message, invalid)))

    def refuse(self, request_id: str, sender, message: str, invalid: bool) -> None:
        """Answer a request `execute` did not accept with one error (INVALID_ARG if `invalid`, else
        INTERNAL), sent by this thread like every other response."""
        self._queue.put((_NEW, request_id, _Active(sender, None, [request_id])))
        self._queue.put((_FAIL, request_id, (message, invalid)))

    def stop(self, timeout: float = 30.0) -> bool:
        """Finish the queued work (call after the engine has shut down and sent its last outputs),
        close the streams the engine never finished, and end the thread: after this no sender is
        touched. False if the thread is still busy after `timeout` seconds."""
        self._queue.put((_STOP, None, None))
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def num_active(self) -> int:
        return len({id(e) for e in self._active.values()})

    # --- the response thread ---

    def _run(self) -> None:
        last_poll = last_stats = time.monotonic()
        work: deque = deque()  # taken from the queue, not yet handled (held while the gate is shut)
        while True:
            try:
                work.append(self._queue.get(timeout=self._poll))
                while True:
                    work.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            stopping = any(kind == _STOP for kind, _, _ in work)
            held = False
            while work:
                kind, request_id, payload = work[0]
                # Ask before each item that may write (the gate reuses an answer for a few ms). Stop
                # comes from finalize, which Triton calls only once every request has had its final
                # response: what is left then is bookkeeping, and the gate is not asked.
                if kind in (_OUTPUT, _FAIL) and not stopping and not self._gate_open():
                    held = True
                    break
                work.popleft()
                if kind != _STOP:
                    self._handle(kind, request_id, payload)
            now = time.monotonic()
            try:
                if now - last_poll >= self._poll:
                    last_poll = now
                    self._check_cancelled()  # asks, writes nothing: also while held
                if now - last_stats >= self._stats_interval:
                    last_stats = now
                    self._update_gauges()
            except Exception:
                log.exception("dllm responder: failed checking cancellations or updating gauges")
            if stopping:
                break
            if held:
                time.sleep(self._poll)  # outputs keep coming: ask the server again only this often
        self._update_gauges()
        self._close_leftovers()

    def _gate_open(self) -> bool:
        try:
            return self.gate.open()
        except Exception:  # a broken check must not stop every stream
            log.exception("dllm responder: write gate failed; writing")
            return True

    def _handle(self, kind: str, request_id: str, payload) -> None:
        try:
            if kind == _NEW:
                for sub_id in payload.sub_ids:
                    self._active[sub_id] = payload
            elif kind == _FAIL:
                self._fail(request_id, *payload)
            elif kind == _OUTPUT:
                self._on_output(request_id, payload)
        except Exception:  # one bad response must not stop the thread that serves all the others
            log.exception("dllm responder: failed handling %s for %s", kind, request_id)

    def _on_output(self, request_id: str, out) -> None:
        entry = self._active.get(request_id)
        if entry is None:
            return
        if not entry.cancelled and not entry.closed:
            reply = entry.tracker.on_output(request_id, out)
            if reply is not None:
                self._send(request_id, entry, reply)
        self._observe_deltas(entry)
        if out.finished:
            del self._active[request_id]
            if not any(sid in self._active for sid in entry.sub_ids):  # the engine let go of every answer
                if entry.cancelled and not entry.closed:
                    self._send_final_flag(entry)
                self._observe_finished(entry, out)

    def _send(self, request_id: str, entry: _Active, reply: GroupReply) -> None:
        pb = self._pb
        flags = pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL if reply.final else 0
        if reply.error is not None:
            response = pb.InferenceResponse(error=pb.TritonError(reply.error, pb.TritonError.INTERNAL))
        elif reply.aborted:
            # We abort only on cancellation (handled above), so this is the engine shutting down.
            response = pb.InferenceResponse(error=pb.TritonError(
                "request aborted: the model is unloading", pb.TritonError.UNAVAILABLE))
        else:
            response = pb.InferenceResponse(output_tensors=output_tensors(pb, entry.tracker, reply))
        try:
            entry.sender.send(response, flags=flags)
            cancelled = not reply.final and entry.sender.is_cancelled()
            entry.checked_at = time.monotonic()
        except Exception as e:  # the client went away: treat as a cancellation
            log.info("dllm responder: send failed for %s (%s); aborting it", request_id, e)
            cancelled = not reply.final
        if reply.final:
            entry.closed = True
            self._abort_answers(entry)  # an answer failed: the others are not wanted any more
        elif cancelled:
            self._cancel(request_id, entry)

    def _cancel(self, request_id: str, entry: _Active) -> None:
        entry.cancelled = True
        self._log_info(f"dllm: request {request_id} cancelled by the client; aborting it in the engine")
        # The engine answers each answer with a final "abort" output within one iteration (K/V
        # freed); the stream's FINAL goes out once all have come, in _on_output.
        self._abort_answers(entry)

    def _abort_answers(self, entry: _Active) -> None:
        for sub_id in entry.sub_ids:
            if self._active.get(sub_id) is entry:
                try:
                    self._engine.abort(sub_id)
                except Exception:  # never submitted (submit failed on an earlier answer), or already gone
                    log.debug("dllm responder: nothing to abort for %s", sub_id)

    def _fail(self, request_id: str, message: str, invalid: bool) -> None:
        entry = self._active.get(request_id)
        if entry is None:
            return
        self._abort_answers(entry)  # answers the engine took before it refused one (n > 1)
        for sub_id in entry.sub_ids:
            self._active.pop(sub_id, None)
        pb = self._pb
        code = pb.TritonError.INVALID_ARG if invalid else pb.TritonError.INTERNAL
        try:
            entry.sender.send(pb.InferenceResponse(error=pb.TritonError(message, code)),
                              flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as e:
            log.info("dllm responder: could not answer %s (%s)", request_id, e)

    def _send_final_flag(self, entry: _Active) -> None:
        try:
            entry.sender.send(flags=self._pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        except Exception as e:
            log.info("dllm responder: could not close a cancelled stream (%s)", e)

    def _check_cancelled(self) -> None:
        now = time.monotonic()
        for request_id, entry in list(self._active.items()):
            # Streams that just received a response were checked then.
            if not entry.cancelled and not entry.closed and now - entry.checked_at >= self._poll:
                entry.checked_at = now
                try:
                    cancelled = entry.sender.is_cancelled()
                except Exception:
                    cancelled = True
                if cancelled:
                    self._cancel(request_id, entry)

    def _close_leftovers(self) -> None:
        """Requests the engine never finished (it was shut down mid-step): close their streams, and
        those of requests registered after the stop (none are expected: Triton calls no execute
        once it finalizes)."""
        pb = self._pb
        while True:
            try:
                kind, request_id, payload = self._queue.get_nowait()
            except queue.Empty:
                break
            if kind == _NEW:
                for sub_id in payload.sub_ids:
                    self._active[sub_id] = payload
        for entry in {id(e): e for e in self._active.values() if not e.closed}.values():
            try:
                entry.sender.send(pb.InferenceResponse(error=pb.TritonError(
                    "request aborted: the model is unloading", pb.TritonError.UNAVAILABLE)),
                    flags=pb.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
            except Exception:
                pass
        self._active.clear()

    def _observe_deltas(self, entry: _Active) -> None:
        if self._metrics is None:
            return
        t = entry.tracker
        first = t.merged_timing().first_delta
        if not entry.first_delta_reported and first is not None:
            entry.first_delta_reported = True
            self._metrics.observe_first_delta(first)
        for gap in t.take_gaps():
            self._metrics.observe_between_deltas(gap)

    def _observe_finished(self, entry: _Active, out) -> None:
        if self._metrics is not None and entry.tracker is not None:
            t = entry.tracker
            timing = t.merged_timing()
            self._metrics.request_finished(out.finish_reason, t.num_prompt_tokens, t.num_output_tokens(),
                                           timing.end_to_end, t.forwards(), len(t.sub_ids), timing.first_delta)

    def _update_gauges(self) -> None:
        if self._metrics is None:
            return
        try:
            stats = self._engine.stats()
            iterations = self._engine.take_iterations()
        except Exception:
            return
        stats["engine_up"] = 0 if getattr(self._engine, "dead", None) else 1
        self._metrics.set_engine_stats(stats)
        self._metrics.observe_iterations(iterations)
