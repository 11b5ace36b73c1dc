"""Readiness of a dllm replica (the model is ready and no instance's engine loop has stopped), and its
drain before it stops (Kubernetes' preStop).

Triton 2.51's readiness endpoints cannot say the second part: its Python backend never asks the model
(`is_ready()` exists in model.py for newer Triton), so `/v2/models/dllm/ready` stays 200 after an
engine loop died, while every request to that instance is answered INTERNAL at once. Each instance
reports its loop on the metrics port instead (`dllm:engine_up`, 1 or 0), and this probe reads both:

    python -m backend.server.probe ready [--http-port 8000] [--metrics-port 8002] [--model dllm]

exits 0 when ready, 1 otherwise with the reason on stdout (what Kubernetes shows in the pod's events).
Used as the readiness `exec` probe in deploy/kubernetes/. Standard library only, and quick: it runs
every few seconds in the serving container. With the `dllm:` metrics off (REPORT_CUSTOM_METRICS not
"true") only the model's readiness is checked.

    python -m backend.server.probe drain [--settle-s 10] [--wait-s 300]

waits `settle-s` (Kubernetes takes the terminating pod out of the Service's endpoints meanwhile), then
until no instance has a request running or waiting (`dllm:num_requests_running` / `_waiting`, twice in a
row), at most `wait-s`. As the preStop hook it lets in-flight generations finish while the server still
serves normally, before SIGTERM: stopping tritonserver 2.51 with requests in flight is not safe (the
model's readiness calls during shutdown can crash its stub, so those requests never get their final
response; README, "Triton 2.51: what this works around").
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.error
import urllib.request

_SERIES = re.compile(r'^dllm:engine_up\{([^}]*)\}\s+(\S+)$', re.MULTILINE)


def stopped_engines(metrics_text: str, model: str) -> list[str]:
    """The `instance` labels of `model`'s instances whose engine loop has stopped (dllm:engine_up 0)."""
    out = []
    for labels, value in _SERIES.findall(metrics_text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if fields.get("model") == model and float(value) == 0:
            out.append(fields.get("instance", "?"))
    return out


def busy_requests(metrics_text: str, model: str) -> float:
    """Requests running or waiting in `model`'s engines, all instances."""
    total = 0.0
    for _kind, labels, value in re.findall(r'^dllm:num_requests_(running|waiting)\{([^}]*)\}\s+(\S+)$', metrics_text,
                                          re.MULTILINE):
        if dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("model") == model:
            total += float(value)
    return total


def _get(url: str, timeout: float) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""


def check(host: str = "127.0.0.1", http_port: int = 8000, metrics_port: int = 8002, model: str = "dllm",
          timeout: float = 2.0) -> str | None:
    """None when ready, else why not."""
    try:
        status, _ = _get(f"http://{host}:{http_port}/v2/models/{model}/ready", timeout)
    except (urllib.error.URLError, OSError) as e:
        return f"the server does not answer on port {http_port} ({e})"
    if status != 200:
        return f"model {model} is not ready (HTTP {status})"
    try:
        status, text = _get(f"http://{host}:{metrics_port}/metrics", timeout)
    except (urllib.error.URLError, OSError) as e:
        return f"the metrics port {metrics_port} does not answer ({e})"
    if status != 200:
        return f"the metrics port {metrics_port} answered HTTP {status}"
    stopped = stopped_engines(text, model)
    if stopped:
        return f"the engine loop of {', '.join(sorted(stopped))} has stopped: the model must be reloaded"
    return None


def drain(host: str = "127.0.0.1", metrics_port: int = 8002, model: str = "dllm", settle_s: float = 10.0,
          wait_s: float = 300.0, poll_s: float = 1.0, log=print) -> bool:
    """Wait until `model` has nothing running or waiting (two readings in a row); False after `wait_s`."""
    time.sleep(settle_s)
    end = time.monotonic() + wait_s
    idle_readings = 0
    while True:
        try:
            busy = busy_requests(_get(f"http://{host}:{metrics_port}/metrics", poll_s + 1)[1], model)
        except (urllib.error.URLError, OSError) as e:
            log(f"drain: the metrics port {metrics_port} does not answer ({e}); stopping now")
            return False
        idle_readings = idle_readings + 1 if busy == 0 else 0
        if idle_readings >= 2:
            log("drain: no request in flight")
            return True
        if time.monotonic() >= end:
            log(f"drain: {busy:g} requests still in flight after {wait_s:g} s; stopping anyway")
            return False
        time.sleep(poll_s)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m backend.server.probe", description=__doc__.split("\n\n")[0])
    ap.add_argument("what", nargs="?", choices=("ready", "drain"), default="ready")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--model", default="dllm")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per HTTP call")
    ap.add_argument("--settle-s", type=float, default=10.0, help="drain: seconds before the first reading")
    ap.add_argument("--wait-s", type=float, default=300.0, help="drain: the most seconds to wait for requests")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.what == "drain":
        drain(args.host, args.metrics_port, args.model, args.settle_s, args.wait_s)
        return 0  # a preStop hook that fails only delays the stop; SIGTERM follows either way
    why = check(args.host, args.http_port, args.metrics_port, args.model, args.timeout)
    print("ready" if why is None else f"not ready: {why}")
    return 0 if why is None else 1


if __name__ == "__main__":
    sys.exit(main())
