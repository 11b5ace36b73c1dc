"""Replays a workload on an in-process engine and records what each request saw.

The driver owns the engine loop (no background thread): it adds every request whose arrival time
has come, runs one `engine.step()`, stamps the deltas, and repeats. Open loop: requests arrive at
their workload times, whatever the engine's backlog (latency counts from the scheduled arrival, so
waiting behind a running step is included). Closed loop (`concurrency=C`): C requests are kept in
flight, a new one submitted as one finishes, which is what Perf Analyzer's concurrency mode does.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from backend.engine.engine import Engine
from backend.engine.request import Phase
from backend.engine.sampling_params import SamplingParams
from benchmarks.metrics import RequestRecord


@dataclass
class Prepared:
    """A workload item made ready for the engine (tokenized, parameters validated) before the clock starts."""

    arrival: float
    prompt_ids: list[int]
    params: SamplingParams
    kind: str = "short"
    answer: str | None = None


class IterationProbe:
    """Per-iteration batch composition and model time, gathered by wrapping the runner's `run` (the
    engine exposes no hook for it; the wrapper only observes and calls through)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.iterations = 0
        self.batch_sizes: list[int] = []
        self.refresh = self.reuse = 0
        self.max_decode_rows = 0
        self.model_seconds = 0.0
        self.max_kv_pages = 0
        self.peak_running = 0
        self.pages_by_request: dict[str, int] = {}  # the most K/V pages each request held
        self._run = engine.runner.run
        engine.runner.run = self._wrapped

    def _wrapped(self, batch):
        self.iterations += 1
        self.batch_sizes.append(len(batch))
        rows = 0
        for r, phase in batch:
            rows += len(r.masked_positions())
            if phase == Phase.REFRESH:
                self.refresh += 1
            else:
                self.reuse += 1
        self.max_decode_rows = max(self.max_decode_rows, rows)
        alloc = self.engine.pool.allocator
        self.max_kv_pages = max(self.max_kv_pages, alloc.num_used)
        self.peak_running = max(self.peak_running, len(self.engine.scheduler.running))
        for r, _ in batch:
            held = len(alloc.owned.get(r.request_id, ()))
            if held > self.pages_by_request.get(r.request_id, 0):
                self.pages_by_request[r.request_id] = held
        start = time.perf_counter()
        try:
            return self._run(batch)
        finally:
            self.model_seconds += time.perf_counter() - start

    def detach(self) -> None:
        self.engine.runner.run = self._run


def replay(engine: Engine, requests: list[Prepared], concurrency: int | None = None,
           decode: Callable[[list[int]], str] | None = None,
           on_progress: Callable[[int, int, float], None] | None = None,
           max_seconds: float | None = None) -> tuple[list[RequestRecord], float]:
    """Run every request to completion, or until `max_seconds` (the rest are aborted and recorded as
    errors). Returns the records (in workload order) and the wall time."""
    n = len(requests)
    records: list[RequestRecord | None] = [None] * n
    queue = deque(range(n)) if concurrency else deque(sorted(range(n), key=lambda i: requests[i].arrival))
    live: dict[str, RequestRecord] = {}
    done = 0
    t0 = time.perf_counter()

    def submit(i: int, now: float) -> None:
        nonlocal done
        req = requests[i]
        rec = RequestRecord(i, req.kind, now if concurrency else req.arrival, len(req.prompt_ids))
        records[i] = rec
        try:
            live[engine.add_request(req.prompt_ids, req.params, request_id=f"b{i}")] = rec
        except ValueError as e:  # a request the engine refuses counts as an error, not a crash
            rec.finish, rec.finish_reason, rec.error = now, "error", str(e)
            done += 1

    while queue or live:
        now = time.perf_counter() - t0
        if concurrency:
            while queue and len(live) < concurrency:
                submit(queue.popleft(), now)
        else:
            while queue and requests[queue[0]].arrival <= now:
                submit(queue.popleft(), now)
        if not live:
            if queue and not concurrency:  # idle until the next arrival
                time.sleep(max(0.0, min(requests[queue[0]].arrival - now, 0.05)))
            continue
        outputs = engine.step()
        now = time.perf_counter() - t0
        for out in outputs:
            rec = live.get(out.request_id)
            if rec is None:
                continue
            if out.new_token_ids:
                rec.delta(now)
                rec.token_ids += out.new_token_ids
            rec.output_tokens, rec.forwards = out.num_output_tokens, out.forwards
            if out.finished:
                rec.finish, rec.finish_reason, rec.error = now, out.finish_reason, out.error
                answer = requests[rec.index].answer
                if answer is not None and decode is not None:
                    rec.correct = decode(rec.token_ids) == answer
                del live[out.request_id]
                done += 1
        if on_progress is not None:
            on_progress(done, n, now)
        if max_seconds is not None and now > max_seconds and (queue or live):
            _give_up(engine, records, requests, queue, live, now, concurrency)
    return [r for r in records if r is not None], time.perf_counter() - t0


def _give_up(engine: Engine, records, requests, queue, live, now: float, concurrency) -> None:
    for rid, rec in live.items():
        engine.abort(rid)
        rec.finish, rec.finish_reason, rec.error = now, "abort", "timeout"
    live.clear()
    while engine.has_unfinished():  # drain the abort outputs, so the next run starts clean
        engine.step()
    for i in queue:
        records[i] = RequestRecord(i, requests[i].kind, now if concurrency else requests[i].arrival,
                                   len(requests[i].prompt_ids), finish_reason="abort", error="timeout (not sent)")
    queue.clear()
