"""Whether the response thread may write to the clients' streams now: not while the model is unavailable.

Triton 2.51's gRPC front end answers a request for a model that is not available (unloading, or not
loaded again yet) on a live stream by writing the refusal at once, without waiting for a write already
in flight on that stream (the non-decoupled error path of stream_infer_handler.cc; the decoupled path
waits). If one of our responses is being written on the same stream at that instant, gRPC aborts the
whole server (`proto_buffer_writer.h:65 ASSERTION FAILED: !byte_buffer->Valid()`, SIGABRT). An
unloading instance is not finalized at once: Triton keeps it serving its in-flight requests until each
has had its final response, while it refuses every new request on the same streams; a client that sends
its next request the moment one ends meets the write of that response. So while the model is unavailable
the response thread holds every response (the engine keeps computing) and sends them once the model is
available again, when Triton hands new requests to the successor instead of refusing them.

The hold ends anyway when the server is stopping (its readiness call fails: nothing will come back) or
after `hold_limit` seconds (an unload with no load after it: the instance cannot finish otherwise).
Once a readiness call has failed the gate stays open for good and never asks again: in 2.51 the first
call after the server began to stop raises "Server not ready", and a second one crashes the stub
(SIGSEGV inside `is_model_ready`), which left every in-flight request of a stopping server (Ctrl-C,
or a Kubernetes pod's SIGTERM) without its final response and the server waiting for its exit timeout.

`is_available` is `pb_utils.is_model_ready` bound to the model's name; None (unit tests, no Triton)
means always open.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Seconds a held response may wait for the model to come back. An unload followed by a load brings it
# back within a model load (seconds on a CPU, longer for a big checkpoint on a GPU).
HOLD_LIMIT_S = 60.0
# Once the model is back, refusals written just before may still be in flight; a response written behind
# one of them is queued by Triton 2.51 and only sent with the stream's next response (if there is one).
SETTLE_S = 0.25
# A "ready" answer is reused this long (each check is a round trip to the server, a few hundred us):
# writes may go out this long after an unload, before the gate shuts.
REUSE_S = 0.005


class WriteGate:
    def __init__(self, is_available: Callable[[], bool] | None = None, hold_limit: float = HOLD_LIMIT_S,
                 settle: float = SETTLE_S, reuse: float = REUSE_S, log_info: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self._available = is_available
        self._hold_limit, self._settle, self._reuse = hold_limit, settle, reuse
        self._open_until = float("-inf")  # a "ready" answer stands until then
        self._log_info = log_info or log.info
        self._clock = clock
        self._held_since: float | None = None  # the current hold's start
        self._back_at: float | None = None  # when the model was first seen available again
        self._gave_up = False  # hold_limit passed: open until the model is available again
        self._stopping = False  # a readiness call failed: the server is stopping; never ask again
        self.holds = 0
        self.checks = 0
        self.check_seconds = 0.0

    def open(self) -> bool:
        """Whether writes may go out now. Ask before each write."""
        if self._available is None or self._stopping or self._clock() < self._open_until:
            return True
        started = time.perf_counter()
        try:
            available = bool(self._available())
        except Exception as e:  # "Server not ready": it is stopping and the model will not come back
            self._stopping = True
            return self._release(f"the server is stopping ({e})", back=True)
        finally:
            self.checks += 1
            self.check_seconds += time.perf_counter() - started
        now = self._clock()
        if available:
            if self._held_since is None:
                self._gave_up = False
                self._open_until = now + self._reuse
                return True
            if self._back_at is None:
                self._back_at = now
            return now - self._back_at >= self._settle and self._release("the model is available again", back=True)
        self._back_at = None
        if self._gave_up:
            return True
        if self._held_since is None:
            self._held_since = now
            self.holds += 1
            self._log_info("dllm: the model is not available to new requests (unloading or loading); holding "
                           f"responses until it is back, at most {self._hold_limit:g} s (Triton 2.51 aborts if a "
                           "response is being written on a stream when it refuses a request there)")
        if now - self._held_since >= self._hold_limit:
            self._gave_up = True
            return self._release("the hold limit passed", back=False)
        return False

    @property
    def holding(self) -> bool:
        return self._held_since is not None

    def summary(self) -> str:
        mean_us = 1e6 * self.check_seconds / self.checks if self.checks else 0.0
        return f"{self.holds} holds, {self.checks} readiness checks ({mean_us:.0f} us each)"

    def _release(self, why: str, back: bool) -> bool:
        if self._held_since is not None:
            self._log_info(f"dllm: sending the held responses after {self._clock() - self._held_since:.1f} s: {why}")
        self._held_since = self._back_at = None
        if back:
            self._gave_up = False
        return True
