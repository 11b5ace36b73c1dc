"""Scaling out, measured on the bundled model: 1 vs 2 model instances in one server, and one server vs
two replicas behind nginx (HTTP and gRPC), streaming and cancellation through the balancer, and one
replica stopped in the middle of a load test.

    apt-get install nginx-light          # Debian's nginx: the balancer (benchmarks/balancer.py)
    python -m benchmarks.replicas [--seconds 20] [--clients 4]

Prints the figures and writes benchmarks/results/<date>-replicas-<machine>.json. Every server listens
on 127.0.0.1 only. On a CPU, each server's engines share the machine's cores: a server with N instances
(or each of N replicas) gets OMP_NUM_THREADS = cores / N, so the comparison is one process using every
core against N processes splitting them. On 2 cores nothing can be gained from a second engine: what the
figures show is the cost (or not) of splitting, and that the mechanisms work; the gain needs a core set
(or a GPU) per engine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import threading
import time
import urllib.request
from datetime import date
from pathlib import Path
from tempfile import TemporaryDirectory

from backend.server.network import free_ports
from backend.server.tritonserver import (
    DEFAULT_MODEL_REPOSITORY,
    join_log,
    layout,
    server_command,
    server_env,
    start,
    wait_ready,
)
from benchmarks.balancer import start_balancer
from benchmarks.replica_load import GrpcClient, closed_loop, summary

OUT = Path(__file__).resolve().parent / "results"
SAMPLING = {"max_tokens": 64, "block_length": 16, "steps": 64, "ignore_eos": True}
STREAMED = {"max_tokens": 64, "block_length": 8, "steps": 64}  # a delta per block at least
LONG = {"max_tokens": 448, "block_length": 8, "steps": 448, "ignore_eos": True}  # still running when cancelled
PROMPTS = [f"{a}+{b}=" for a in range(10, 40, 3) for b in (7, 23)]


def repository(folder: Path, instances: int) -> Path:
    """The real dllm model (files linked) with `instances` KIND_CPU instances."""
    source = DEFAULT_MODEL_REPOSITORY / "dllm"
    (folder / "dllm" / "1").mkdir(parents=True)
    group = f"\ninstance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n"
    (folder / "dllm" / "config.pbtxt").write_text((source / "config.pbtxt").read_text() + group)
    for entry in (source / "1").iterdir():
        if entry.name != "__pycache__":
            (folder / "dllm" / "1" / entry.name).symlink_to(entry.resolve())
    return folder


class Replica:
    def __init__(self, folder: Path, instances: int, threads: int):
        self.http, self.grpc, self.metrics = free_ports(3)
        files = layout()
        cmd = server_command(files, repository(folder / "repo", instances), self.http, self.grpc, self.metrics,
                             exit_timeout_secs=10, gpu=False)
        env = server_env(files, admin_key=secrets.token_urlsafe(16))
        env["OMP_NUM_THREADS"] = str(threads)  # each stub's torch threads
        self.log = open(folder / "server.log", "w")  # noqa: SIM115
        self.proc = start(cmd, env, self.log, start_new_session=True)
        if not wait_ready(self.http, "dllm", 300, alive=lambda: self.proc.poll() is None):
            self.stop()
            raise RuntimeError(f"tritonserver did not start; see {folder / 'server.log'}")

    def scrape(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for name, labels, value in re.findall(r"^(dllm:[^\s{]+)(\{[^}]*\})?\s+(\S+)$", text, re.MULTILINE):
            key = name + ('{finish_reason="abort"}' if 'finish_reason="abort"' in labels else "")
            out[key] = out.get(key, 0.0) + float(value)
        return out

    def stop(self, wait_s: float = 30.0) -> dict:
        """SIGINT (as a pod's SIGTERM), then SIGKILL after `wait_s`: how it ended."""
        started = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        join_log(self.proc)
        return {"exit_code": self.proc.returncode, "seconds": round(time.monotonic() - started, 1)}


def measure(protocol: str, url: str, args) -> dict:
    closed_loop(protocol, url, 2, 2.0, PROMPTS, SAMPLING)  # warm-up
    result = summary(closed_loop(protocol, url, args.clients, args.seconds, PROMPTS, SAMPLING), args.seconds)
    print(f"  {protocol:4s} {url:22s} {result['requests_per_s']:7.2f} req/s {result['tokens_per_s']:8.1f} tok/s "
          f"p50 {result['p50_s']} s p95 {result['p95_s']} s  errors {result['errors']} hung {result['hung']}")
    return result


def instances_scenario(tmp: Path, args) -> dict:
    out = {}
    # The third: one engine with one thread, to tell a gain from a second engine from torch's own
    # threads losing under contention (the Makefile's BENCH_THREADS note).
    for n, threads, key in ((1, args.cores, "1_instance"), (2, max(1, args.cores // 2), "2_instances"),
                            (1, 1, "1_instance_1_thread")):
        print(f"one server, {n} instance(s), OMP_NUM_THREADS={threads} each")
        server = Replica(tmp / key, n, threads)
        try:
            out[key] = {p: measure(p, f"127.0.0.1:{server.grpc if p == 'grpc' else server.http}", args)
                        for p in ("grpc", "http")}
        finally:
            server.stop()
    return out


def wait_until(predicate, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return round(time.monotonic() - start, 2)
        time.sleep(0.1)
    return None


def streaming_and_cancel(lb, replicas: list[Replica]) -> dict:
    direct = GrpcClient(f"127.0.0.1:{replicas[0].grpc}")
    via = GrpcClient(lb.grpc_url)
    try:
        a = direct.generate("copy abcdef =", STREAMED)
        b = via.generate("copy abcdef =", STREAMED)
    finally:
        direct.close()
        via.close()
    out = {"stream": {"responses": b.responses, "same_text_as_direct": a.text == b.text and b.status == "ok"}}
    aborts = sum(r.scrape().get('dllm:requests_total{finish_reason="abort"}', 0) for r in replicas)
    client = GrpcClient(lb.grpc_url)
    first = threading.Event()
    worker = threading.Thread(target=lambda: client.generate("copy abcdefghij =", LONG, 120, first.set), daemon=True)
    worker.start()
    first.wait(60)
    client.close(cancel=True)

    def freed() -> bool:
        m = [r.scrape() for r in replicas]
        return (sum(x.get('dllm:requests_total{finish_reason="abort"}', 0) for x in m) > aborts
                and sum(x.get("dllm:kv_pages_used", 0) for x in m) == 0)

    out["grpc_cancel"] = {"aborted_and_freed_after_s": wait_until(freed, 30)}
    # An HTTP client that goes away in the middle of generate_stream, through nginx and directly.
    for key, url in (("http_sse_disconnect", lb.http_url),
                     ("http_sse_disconnect_direct", f"127.0.0.1:{replicas[0].http}")):
        wait_until(lambda: sum(r.scrape().get("dllm:kv_pages_used", 0) for r in replicas) == 0, 120)
        aborts = sum(r.scrape().get('dllm:requests_total{finish_reason="abort"}', 0) for r in replicas)
        body = json.dumps({"text_input": "copy abcdefghij =", **LONG}).encode()
        request = urllib.request.Request(f"http://{url}/v2/models/dllm/generate_stream", data=body)
        with urllib.request.urlopen(request, timeout=60) as resp:
            resp.readline()  # the first event: the request is running; then the client goes away
        out[key] = {"aborted_and_freed_after_s": wait_until(freed, 20)}
    print(f"streaming via nginx: {out['stream']}; gRPC cancel: {out['grpc_cancel']}; "
          f"HTTP SSE disconnect: {out['http_sse_disconnect']} (directly: {out['http_sse_disconnect_direct']})")
    return out


def failover(lb, replicas: list[Replica], args) -> dict:
    """gRPC and HTTP clients through nginx; replica 1 stopped (SIGINT, SIGKILL 30 s later if still up)
    a third of the way in, with time left after it."""
    seconds = max(args.seconds, 15.0) * 3
    stopped: dict = {}

    def stop_one() -> None:
        stopped["began"] = time.monotonic()
        stopped.update(replicas[1].stop(30))
        stopped["ended"] = time.monotonic()

    runs: dict = {}
    half = args.clients // 2 or 1
    grpc = threading.Thread(target=lambda: runs.update(
        grpc=closed_loop("grpc", lb.grpc_url, half, seconds, PROMPTS, SAMPLING, (seconds / 3, stop_one))))
    grpc.start()
    runs["http"] = closed_loop("http", lb.http_url, half, seconds, PROMPTS, SAMPLING)
    grpc.join(seconds + 120)
    began, ended = stopped.pop("began"), stopped.pop("ended")
    out = {"replica_stopped": stopped}
    for protocol, run in runs.items():
        windows = {"before": [o for o in run.outcomes if o.start + o.seconds < began],
                   "in_flight_at_the_stop": [o for o in run.outcomes if o.start < began <= o.start + o.seconds],
                   "during_the_stop": [o for o in run.outcomes if began <= o.start < ended],
                   "after_the_stop": [o for o in run.outcomes if o.start >= ended]}
        out[protocol] = {**summary(run, seconds),
                         **{k: {s: sum(o.status == s for o in v) for s in ("ok", "error", "hung")}
                            for k, v in windows.items()}}
    print(f"replica stopped mid-test: {stopped}")
    for protocol in runs:
        r = out[protocol]
        print(f"  {protocol}: " + "; ".join(f"{k}: {r[k]}" for k in ("before", "in_flight_at_the_stop",
                                                                     "during_the_stop", "after_the_stop"))
              + f"; errors: {r['error_samples']}")
    return out


def replicas_scenario(tmp: Path, args) -> dict:
    threads = max(1, args.cores // 2)
    print(f"two replicas (1 instance, OMP_NUM_THREADS={threads} each) behind nginx")
    doc: dict = {}
    replicas: list[Replica] = []
    lb = None
    try:
        replicas += [Replica(tmp / f"replica{i}", 1, threads) for i in range(2)]
        lb = start_balancer(tmp / "nginx", [(r.http, r.grpc) for r in replicas])
        doc["two_replicas_nginx"] = {p: measure(p, lb.grpc_url if p == "grpc" else lb.http_url, args)
                                     for p in ("grpc", "http")}
        doc["through_nginx"] = streaming_and_cancel(lb, replicas)
        doc["failover"] = failover(lb, replicas, args)
    finally:
        if lb is not None:
            lb.stop()
        for r in replicas:
            r.stop()
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.replicas", description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="each measurement's length")
    ap.add_argument("--clients", type=int, default=4, help="closed-loop clients")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--only", choices=("instances", "replicas"), help="run one part")
    args = ap.parse_args(argv)
    doc = {"machine": {"cores": args.cores, "cpu": _cpu()}, "sampling": SAMPLING, "clients": args.clients,
           "seconds": args.seconds}
    with TemporaryDirectory(prefix="dllm-replicas-") as tmp:
        if args.only != "replicas":
            doc["instances"] = instances_scenario(Path(tmp), args)
        if args.only != "instances":
            doc.update(replicas_scenario(Path(tmp), args))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{date.today().isoformat()}-replicas-cpu{args.cores}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


def _cpu() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    raise SystemExit(main())
