"""Load through the OpenAI-compatible server, with the official `openai` client:

1. `--requests` (256) streaming chat requests at once: every answer must be exact (what Triton answers
   the same prompt straight over gRPC) and complete (finish_reason stop), and the K/V pool back to 0;
2. `--disconnects` (50) clients that each start a long stream, read its first delta, and go away at once:
   their Triton requests must be aborted and every K/V page freed within a second.

    python -m benchmarks.openai_load                      # starts its own `make serve-openai` on free ports
    python -m benchmarks.openai_load --base-url http://127.0.0.1:9000/v1 --grpc-url 127.0.0.1:8001 --metrics-port 8002

Prints the figures and writes benchmarks/results/<date>-openai-load-<machine>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import httpx
import openai

from benchmarks.openai_common import RESULTS, Servers, metrics, reference_answers, start_servers, task_prompts, write

# A stream that runs for seconds on a CPU: many blocks, one token per step.
LONG = {"max_tokens": 128, "block_length": 8, "steps": 128, "ignore_eos": True}


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def _one_chat(client: openai.AsyncOpenAI, prompt: str) -> dict:
    start, first, text, reason = time.perf_counter(), None, "", None
    stream = await client.chat.completions.create(model="dllm", messages=[{"role": "user", "content": prompt}],
                                                  stream=True)
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                first = first or time.perf_counter()
                text += choice.delta.content
            reason = choice.finish_reason or reason
    end = time.perf_counter()
    return {"prompt": prompt, "text": text, "finish_reason": reason, "latency_s": end - start,
            "first_chunk_s": (first or end) - start}


async def _wait_idle(metrics_port: int, since: float, timeout: float, aborted_at_least: float = 0.0) -> float | None:
    """Seconds from `since` (a perf_counter time) until the K/V pool is empty and nothing runs (and the
    abort count is reached), or None after `timeout` seconds. The gauges lag the engine by up to 0.5 s
    (the model updates them twice a second), which the figure includes."""
    while time.perf_counter() - since < timeout:
        m = metrics(metrics_port)
        if (m.get("dllm:kv_pages_used", 0) == 0 and m.get("dllm:num_requests_running", 0) == 0
                and m.get("dllm:requests_total{abort}", 0) >= aborted_at_least):
            return time.perf_counter() - since
        await asyncio.sleep(0.02)
    return None


async def concurrent_chats(servers: Servers, count: int, distinct: int = 32) -> dict:
    prompts = task_prompts(distinct)
    want = await reference_answers(servers.grpc_url, prompts)
    sent = [prompts[i % distinct] for i in range(count)]
    limits = httpx.Limits(max_connections=count + 8, max_keepalive_connections=count + 8)
    async with openai.AsyncOpenAI(base_url=servers.base_url, api_key="unused", max_retries=0, timeout=600,
                                  http_client=httpx.AsyncClient(limits=limits, timeout=600)) as client:
        start = time.perf_counter()
        results = await asyncio.gather(*(_one_chat(client, p) for p in sent), return_exceptions=True)
        wall = time.perf_counter() - start
    errors = [repr(r) for r in results if isinstance(r, BaseException)]
    done = [r for r in results if not isinstance(r, BaseException)]
    exact = sum(r["text"] == want[r["prompt"]] and r["finish_reason"] == "stop" for r in done)
    idle_s = await _wait_idle(servers.metrics_port, start + wall, 10.0)
    lat, first = [r["latency_s"] for r in done], [r["first_chunk_s"] for r in done]
    return {"requests": count, "distinct_prompts": distinct, "exact_and_complete": exact, "errors": errors[:5],
            "error_count": len(errors), "wall_s": round(wall, 3), "requests_per_s": round(count / wall, 2),
            "latency_p50_s": round(_pct(lat, 50), 4) if lat else None,
            "latency_p95_s": round(_pct(lat, 95), 4) if lat else None,
            "first_chunk_p50_s": round(_pct(first, 50), 4) if first else None,
            "kv_pool_empty_after_s": None if idle_s is None else round(idle_s, 3)}


async def disconnects(servers: Servers, count: int) -> dict:
    before = metrics(servers.metrics_port).get("dllm:requests_total{abort}", 0)
    body = {"model": "dllm", "messages": [{"role": "user", "content": "copy abcdefghij ="}], "stream": True, **LONG}
    started = asyncio.Event()
    running = 0
    limits = httpx.Limits(max_connections=count + 8)

    async def one(http: httpx.AsyncClient) -> None:
        nonlocal running
        async with http.stream("POST", f"{servers.base_url}/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if '"content":"' in line and '"role"' not in line:  # a committed delta: it is running
                    break
            running += 1
            if running == count:
                started.set()
            await started.wait()
        # leaving the block closes the connection mid-stream

    async with httpx.AsyncClient(limits=limits, timeout=600) as http:
        tasks = [asyncio.create_task(one(http)) for _ in range(count)]
        await asyncio.wait_for(started.wait(), 300)
        used = metrics(servers.metrics_port).get("dllm:kv_pages_used", 0)
        closed = time.perf_counter()
        await asyncio.gather(*tasks)
    freed_s = await _wait_idle(servers.metrics_port, closed, 30.0, before + count)
    aborted = metrics(servers.metrics_port).get("dllm:requests_total{abort}", 0) - before
    return {"clients": count, "kv_pages_used_before": used, "aborted": aborted,
            "pages_freed_within_s": None if freed_s is None else round(freed_s, 3)}


async def run(servers: Servers, requests: int, disconnect_clients: int) -> dict:
    doc = {"load": await concurrent_chats(servers, requests)}
    if disconnect_clients:
        doc["disconnects"] = await disconnects(servers, disconnect_clients)
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.openai_load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", help="a running OpenAI server (default: start `make serve-openai` here)")
    ap.add_argument("--grpc-url", default="127.0.0.1:8001")
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--disconnects", type=int, default=50)
    args = ap.parse_args(argv)
    servers = (Servers(args.base_url, args.grpc_url, args.metrics_port) if args.base_url
               else start_servers(RESULTS / "openai-load.server.log"))
    try:
        doc = asyncio.run(run(servers, args.requests, args.disconnects))
    finally:
        servers.stop()
    load = doc["load"]
    print(f"{load['requests']} concurrent streaming chats: {load['exact_and_complete']} exact and complete, "
          f"{load['error_count']} errors, {load['wall_s']} s ({load['requests_per_s']} req/s), latency p50 "
          f"{load['latency_p50_s']} s p95 {load['latency_p95_s']} s, first chunk p50 {load['first_chunk_p50_s']} s; "
          f"K/V pool empty {load['kv_pool_empty_after_s']} s after the last answer")
    if "disconnects" in doc:
        d = doc["disconnects"]
        print(f"{d['clients']} clients gone mid-stream ({d['kv_pages_used_before']:.0f} K/V pages in use): "
              f"{d['aborted']:.0f} requests aborted, every page freed within {d['pages_freed_within_s']} s")
    print(f"written to {write('openai-load', doc)}")
    ok = load["exact_and_complete"] == load["requests"] and load["kv_pool_empty_after_s"] is not None
    if "disconnects" in doc:
        d = doc["disconnects"]
        ok = ok and d["aborted"] == d["clients"] and d["pages_freed_within_s"] is not None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
