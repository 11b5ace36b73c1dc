"""What the OpenAI-compatible server costs: the same streamed requests through it (`/v1/chat/completions`,
server-sent events read with httpx) and straight to Triton's gRPC stream (the server's own gRPC client,
`openai_server.triton`, with the prompt the chat template renders: the bundled model's is the message
itself), at concurrency 1 and 16: p50 / p95 latency and time to the first content chunk, and the
overhead at p50: the median of the differences between the two paths' latencies for the same prompt,
sent one right after the other (a machine shared with other work drifts less within a pair than
across a run).

    python -m benchmarks.openai_overhead                  # starts its own `make serve-openai` on free ports
    python -m benchmarks.openai_overhead --base-url http://127.0.0.1:9000/v1 --grpc-url 127.0.0.1:8001

Prints the figures and writes benchmarks/results/<date>-openai-overhead-<machine>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import httpx

from benchmarks.openai_common import RESULTS, Servers, start_servers, task_prompts, write
from openai_server.triton import Triton, TritonRequest


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


async def _via_openai(http: httpx.AsyncClient, base_url: str, prompt: str) -> tuple[float, float, str]:
    body = {"model": "dllm", "messages": [{"role": "user", "content": prompt}], "stream": True}
    start, first, text = time.perf_counter(), None, ""
    async with http.stream("POST", f"{base_url}/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:])["choices"]
            delta = choices[0]["delta"].get("content") if choices else None
            if delta:
                first = first or time.perf_counter()
                text += delta
    end = time.perf_counter()
    return end - start, (first or end) - start, text


async def _direct(triton: Triton, prompt: str) -> tuple[float, float, str]:
    start, first, text = time.perf_counter(), None, ""
    async for update in triton.generate(TritonRequest(prompt)):
        delta = "".join(a.text for a in update.answers)
        if delta:
            first = first or time.perf_counter()
            text += delta
    end = time.perf_counter()
    return end - start, (first or end) - start, text


async def _pairs(calls: dict, prompts: list[str], concurrency: int) -> list[tuple]:
    """Each prompt by both paths, one right after the other (which goes first alternates), `concurrency`
    workers at a time (a closed loop): a pair shares the machine's load of its moment, so the difference
    within a pair is the server's cost even where other work makes the latencies drift."""
    queue = list(reversed(list(enumerate(prompts))))
    out = []

    async def worker():
        while queue:
            i, prompt = queue.pop()
            order = ("direct", "openai") if i % 2 == 0 else ("openai", "direct")
            got = {name: await calls[name](prompt) for name in order}
            out.append((got["direct"], got["openai"]))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


def _summary(samples: list[tuple[float, float, str]]) -> dict:
    lat, first = [s[0] * 1e3 for s in samples], [s[1] * 1e3 for s in samples]
    return {"requests": len(samples), "latency_p50_ms": round(_pct(lat, 50), 2),
            "latency_p95_ms": round(_pct(lat, 95), 2), "first_chunk_p50_ms": round(_pct(first, 50), 2),
            "first_chunk_p95_ms": round(_pct(first, 95), 2)}


async def measure(servers: Servers, concurrency: int, requests: int) -> dict:
    prompts = task_prompts(requests, seed=concurrency)
    triton = Triton(servers.grpc_url, "dllm")
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as http:
        calls = {"direct": lambda p: _direct(triton, p), "openai": lambda p: _via_openai(http, servers.base_url, p)}
        await _pairs(calls, prompts[: 2 * concurrency], concurrency)  # warm-up: connections, first batches
        pairs = await _pairs(calls, prompts, concurrency)
    await triton.close()
    out = {"direct": _summary([d for d, _ in pairs]), "openai": _summary([o for _, o in pairs])}
    added = [(o[0] - d[0]) * 1e3 for d, o in pairs]
    added_first = [(o[1] - d[1]) * 1e3 for d, o in pairs]
    out["overhead_p50_ms"] = round(statistics.median(added), 2)  # the median of the paired differences
    out["overhead_p50_pct"] = round(100 * out["overhead_p50_ms"] / out["direct"]["latency_p50_ms"], 2)
    out["first_chunk_overhead_p50_ms"] = round(statistics.median(added_first), 2)
    out["p50_ratio_pct"] = round(100 * (out["openai"]["latency_p50_ms"] / out["direct"]["latency_p50_ms"] - 1), 2)
    out["same_answers"] = all(d[2] == o[2] for d, o in pairs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.openai_overhead", description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", help="a running OpenAI server (default: start `make serve-openai` here)")
    ap.add_argument("--grpc-url", default="127.0.0.1:8001")
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--requests", type=int, default=64, help="prompts per concurrency, each sent by both paths "
                    "(x concurrency / 4 above 4)")
    args = ap.parse_args(argv)
    servers = (Servers(args.base_url, args.grpc_url, 0) if args.base_url
               else start_servers(RESULTS / "openai-overhead.server.log"))
    doc: dict = {"results": {}}
    try:
        for c in (int(x) for x in args.concurrency.split(",")):
            res = asyncio.run(measure(servers, c, args.requests * max(1, c // 4)))
            doc["results"][str(c)] = res
            d, o = res["direct"], res["openai"]
            print(f"concurrency {c:>2}: straight to Triton gRPC p50 {d['latency_p50_ms']} ms p95 "
                  f"{d['latency_p95_ms']} ms first chunk p50 {d['first_chunk_p50_ms']} ms | through the OpenAI server "
                  f"p50 {o['latency_p50_ms']} ms p95 {o['latency_p95_ms']} ms first chunk p50 "
                  f"{o['first_chunk_p50_ms']} ms | overhead at p50 {res['overhead_p50_ms']} ms "
                  f"({res['overhead_p50_pct']} %), "
                  f"first chunk {res['first_chunk_overhead_p50_ms']} ms; same answers: {res['same_answers']}",
                  flush=True)
    finally:
        servers.stop()
    print(f"written to {write('openai-overhead', doc)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
