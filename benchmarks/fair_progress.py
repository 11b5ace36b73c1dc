"""Fair progress against a running server: a short request's latency behind a queue of heavy ones.

Heavy requests (448 tokens, `block_length` 1: every step a Refresh of the whole sequence) are what
one client can send to take the engine's iterations; the short request is a normal one. The bound
the scheduler keeps (backend/engine/scheduling/policies.py): the short request finishes within 5x its time on an
idle server plus one heavy iteration (the mean engine iteration while only heavy requests run, from
the server's own `dllm:iteration_seconds` histogram), over HTTP and over gRPC.

    python -m benchmarks.fair_progress --grpc localhost:8001 --http localhost:8000 --metrics-port 8002 \
        --heavy 16 [--finish] [--out results.json]

`--finish` waits for every heavy request to finish (minutes on a 2-core CPU); without it they are
cancelled once the short requests are measured.
"""

from __future__ import annotations

import argparse
import json
import queue
import re
import statistics
import sys
import time
import urllib.request
from dataclasses import dataclass, field

from client import grpc_generate, http_generate

HEAVY = {"max_tokens": 448, "block_length": 1, "ignore_eos": True}
SHORT_PROMPT = "1234+4321="
BOUND_FACTOR = 5


def iteration_totals(metrics_port: int) -> tuple[float, float]:
    """(seconds, iterations) summed over the dllm:iteration_seconds series."""
    with urllib.request.urlopen(f"http://localhost:{metrics_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    sums = [float(v) for v in re.findall(r"^dllm:iteration_seconds_sum(?:\{[^}]*\})?\s+(\S+)$", text, re.M)]
    counts = [float(v) for v in re.findall(r"^dllm:iteration_seconds_count(?:\{[^}]*\})?\s+(\S+)$", text, re.M)]
    return sum(sums), sum(counts)


@dataclass
class HeavyLoad:
    """`n` heavy requests on one gRPC stream; `finals` counts the ones that ended (any way)."""

    url: str
    n: int
    sampling: dict = field(default_factory=lambda: dict(HEAVY))

    def __post_init__(self):
        import tritonclient.grpc as grpcclient

        self.events: queue.Queue = queue.Queue()
        self.client = grpcclient.InferenceServerClient(self.url)
        self.client.start_stream(callback=lambda result, error: self.events.put((result, error)))
        self.finished: dict[str, str] = {}  # request id -> finish reason or error
        for i in range(self.n):
            inputs = grpc_generate.build_inputs(grpcclient, f"copy heavy{i} =", self.sampling, stream=True)
            self.client.async_stream_infer("dllm", inputs, request_id=f"heavy{i}", enable_empty_final_response=True)

    def poll(self, timeout: float = 0.0) -> None:
        end = time.monotonic() + timeout
        while True:
            try:
                result, error = self.events.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return
            if error is not None:
                self.finished[f"error{len(self.finished)}"] = error.message()
                continue
            response = result.get_response()
            if response.parameters["triton_final_response"].bool_param:
                reason = result.as_numpy("finish_reason")
                self.finished[response.id] = reason.reshape(-1)[0].decode() if reason is not None else ""

    def wait(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while len(self.finished) < self.n and time.monotonic() < end:
            self.poll(1.0)
        return len(self.finished) == self.n

    def close(self, cancel: bool) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()


def short_request(protocol: str, url: str) -> dict:
    call = grpc_generate.generate if protocol == "grpc" else http_generate.generate
    out = call(url, "dllm", SHORT_PROMPT, {}, stream=True, timeout=600)
    return {"first_delta_s": out.first_delta_s, "total_s": out.total_s, "text": out.text,
            "finish_reason": out.finish_reason}


def run(grpc_url: str, http_url: str, metrics_port: int, n_heavy: int, finish: bool = False,
        warmup_s: float = 3.0, log=print) -> dict:
    urls = {"grpc": grpc_url, "http": http_url}
    unloaded = {p: statistics.median(short_request(p, u)["total_s"] for _ in range(3)) for p, u in urls.items()}
    log(f"unloaded short request: {unloaded}")
    heavy = HeavyLoad(grpc_url, n_heavy)
    try:
        time.sleep(warmup_s)  # the heavy requests are admitted and running
        s0, c0 = iteration_totals(metrics_port)
        time.sleep(warmup_s)
        s1, c1 = iteration_totals(metrics_port)
        heavy_iteration = (s1 - s0) / max(c1 - c0, 1)
        log(f"heavy iteration (mean, {int(c1 - c0)} iterations): {heavy_iteration:.3f} s")
        loaded = {}
        for p, u in urls.items():
            loaded[p] = short_request(p, u)
            log(f"short request over {p} behind {n_heavy} heavy: {loaded[p]}")
        heavy.poll()
        running_heavy = n_heavy - len(heavy.finished)
        all_finished = heavy.wait(3600) if finish else None
    finally:
        heavy.close(cancel=not finish)
    bound = {p: BOUND_FACTOR * unloaded[p] + heavy_iteration for p in urls}
    return {"n_heavy": n_heavy, "heavy_sampling": HEAVY, "unloaded_s": unloaded, "heavy_iteration_s": heavy_iteration,
            "loaded": loaded, "bound_s": bound, "heavy_running_when_measured": running_heavy,
            "within_bound": all(loaded[p]["total_s"] <= bound[p] for p in urls),
            "heavy_all_finished": all_finished, "heavy_finish_reasons": sorted(set(heavy.finished.values()))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grpc", default="localhost:8001")
    ap.add_argument("--http", default="localhost:8000")
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--heavy", type=int, default=16)
    ap.add_argument("--finish", action="store_true", help="wait for every heavy request to finish")
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args(argv)
    result = run(a.grpc, a.http, a.metrics_port, a.heavy, a.finish)
    print(json.dumps(result, indent=1))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if result["within_bound"] and result["heavy_all_finished"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
