"""A thread-safe front for the engine: one background loop, per-request output queues or callbacks.

The Triton adapter and the benchmarks submit from other threads; only the loop thread touches the
engine, so the engine itself needs no locks. Submissions and aborts are handed over through a
lock-protected inbox that the loop drains between iterations.

If an exception escapes the engine anyway (the engine isolates failing requests itself; this is the
last line of defence), the loop does not die silently: every request it holds or has queued gets a
final "error" output at once, later submissions raise `EngineDead`, and `dead` says why, so that the
server can report the model as not ready instead of leaving requests hanging.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable

from backend.engine.engine import Engine
from backend.engine.outputs import RequestOutput
from backend.engine.request import Request
from backend.engine.sampling_params import SamplingParams

log = logging.getLogger(__name__)


class EngineDead(RuntimeError):
    """The engine loop has stopped after an unexpected failure; no request can be served."""


class RequestStream:
    """The outputs of one request, in order; iteration ends after the finished one."""

    def __init__(self, request_id: str):
        self.request_id = request_id
        self._queue: queue.Queue[RequestOutput] = queue.Queue()

    def put(self, out: RequestOutput) -> None:
        self._queue.put(out)

    def get(self, timeout: float | None = None) -> RequestOutput:
        return self._queue.get(timeout=timeout)

    def __iter__(self):
        while True:
            out = self.get()
            yield out
            if out.finished:
                return

    async def __aiter__(self):
        while True:
            out = await asyncio.to_thread(self.get)
            yield out
            if out.finished:
                return


class AsyncEngine:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._cv = threading.Condition()
        self._inbox: list[tuple] = []
        self._sinks: dict[str, Callable[[RequestOutput], None]] = {}
        self._thread: threading.Thread | None = None
        self._stop = False
        self._dead: str | None = None  # why the loop died, once it has
        self._ids = 0
        self._stats = engine.gauges()
        self._iterations: list = []  # engine IterationRecords not yet taken by take_iterations()

    def start(self) -> AsyncEngine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dllm-engine", daemon=True)
            self._thread.start()
        return self

    def submit(self, prompt_ids: list[int], params: SamplingParams, request_id: str | None = None,
               on_output: Callable[[RequestOutput], None] | None = None) -> RequestStream:
        """Queue a request. Validation errors are raised here, in the caller's thread."""
        return self.submit_validated(self.validate(prompt_ids, params), request_id, on_output)

    def submit_validated(self, request: Request, request_id: str | None = None,
                         on_output: Callable[[RequestOutput], None] | None = None) -> RequestStream:
        """Queue a request that `validate` built (the intake validates once; nothing checks it again)."""
        with self._cv:
            if request_id is None:
                self._ids += 1
                request_id = f"req-{self._ids}"
            stream = RequestStream(request_id)
            if self._dead is not None:
                raise EngineDead(f"the engine has stopped ({self._dead}); the model must be reloaded")
            if self._stop:  # the loop would never see it
                raise RuntimeError("the engine is shutting down")
            self._inbox.append(("add", request_id, request, on_output or stream.put))
            self._cv.notify()
        return stream

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> Request:
        """The request these inputs make, or the ValueError (naming the field) they raise. Reads only
        immutable settings, so it is safe off the loop thread."""
        return self.engine.validate(prompt_ids, params)

    def abort(self, request_id: str) -> None:
        with self._cv:
            self._inbox.append(("abort", request_id))
            self._cv.notify()

    def stats(self) -> dict:
        with self._cv:
            return dict(self._stats)

    def take_iterations(self) -> list:
        """The engine iterations (time, predicted time, Refresh / Reuse tokens) since the last call."""
        with self._cv:
            out, self._iterations = self._iterations, []
            return out

    @property
    def dead(self) -> str | None:
        """None while the loop serves; after an unexpected failure, what it was."""
        return self._dead

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Abort every request (each gets its final output), stop the loop; False if the loop thread
        is still running after `timeout` seconds (in the middle of a long step)."""
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
            self._thread = None
        return True

    # --- the loop thread ------------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as e:  # noqa: BLE001  (whatever it is, nobody may be left waiting)
            log.exception("dllm engine loop died; failing every request it held")
            self._die(f"{type(e).__name__}: {e}")

    def _die(self, reason: str) -> None:
        with self._cv:
            self._dead = reason
            queued = [item for item in self._inbox if item[0] == "add"]
            self._inbox = []
        failed = [(rid, sink) for rid, sink in self._sinks.items()]
        failed += [(item[1], item[4]) for item in queued]
        self._sinks = {}
        for rid, sink in failed:
            try:
                sink(RequestOutput(rid, [], True, "error", f"the engine has stopped ({reason})"))
            except Exception:
                log.exception("output callback for %s failed", rid)

    def _serve(self) -> None:
        engine = self.engine
        while True:
            with self._cv:
                while not self._inbox and not self._stop and not engine.has_unfinished():
                    self._cv.wait()
                inbox, self._inbox = self._inbox, []
                stopping = self._stop
            for item in inbox:
                self._handle(item)
            if stopping:
                for rid in list(engine.requests):
                    engine.abort(rid)
                self._deliver(engine.step())
                return
            self._deliver(engine.step())

    def _handle(self, item: tuple) -> None:
        if item[0] == "add":
            _, rid, request, sink = item
            try:
                self.engine.add(request, rid)
                self._sinks[rid] = sink
            except Exception as e:  # already validated; this is the last line of defence
                sink(RequestOutput(rid, [], True, "error", str(e), request.prompt_len))
        else:
            self.engine.abort(item[1])

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            sink = self._sinks.pop(out.request_id, None) if out.finished else self._sinks.get(out.request_id)
            if sink is None:
                continue
            try:
                sink(out)
            except Exception:  # a broken consumer must not stop the loop for everybody else
                log.exception("output callback for %s failed", out.request_id)
        engine = self.engine
        with self._cv:
            self._stats = engine.gauges()
            log_ = engine.iteration_log
            while log_:
                self._iterations.append(log_.popleft())
            del self._iterations[:-4096]  # nobody taking them: keep the latest only
