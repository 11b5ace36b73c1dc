"""How close the paged attention kernel comes to the card's memory bandwidth, launch choices side by side.

    python -m benchmarks.attention_bandwidth --out attention.json      # CUDA: the models' shapes
    python -m benchmarks.attention_bandwidth --dry-run                 # CPU, interpreter, tiny shapes

One layer of a Reuse step: B requests of `rows` query rows (a block), each attending to its fresh rows
and to L cached slots per KV head on shuffled pages of 16. The fewest bytes the step must move: every
cached K and V once, the fresh q, k, v and the output once; effective bandwidth is those bytes over the
median time (`triton.testing.do_bench` of a CUDA graph of the launches, as the engine replays its
Reuse steps), and the ceiling is a device-to-device copy measured on the
same card (bytes read plus written). The default `PagedConfig` is what the engine runs; the others
compute the same attention (each is checked against the default's output here, and against the
reference in `tests/unit/test_paged_attention.py`). A dry run checks the same steps at tiny size under
TRITON_INTERPRET=1 (its times mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

import torch

from backend.models.model_config import PRESETS

BLOCK = 32  # the served models' block length: a Reuse step's query rows, plus the logit shift's row
# (query heads, KV heads, head dim, query rows of a block) of the served models
SHAPES = {name: (PRESETS[name].num_heads, PRESETS[name].num_kv_heads, PRESETS[name].head_dim,
                 BLOCK + PRESETS[name].logit_shift) for name in ("llada-8b", "dream-7b")}
CASES = [(64, 2048), (16, 1024), (1, 4096)]  # (requests, cached slots per KV head)
PAGE = 16
ROTATE_BYTES = 512 << 20  # cases smaller than this rotate among copies of their cache (H200's L2: 50 MB)


def interpreted(module: str, argv) -> None:
    """A dry run interprets the kernels, and TRITON_INTERPRET counts only if set before triton is
    imported (torch imports it): a process started without it starts again with it."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        args = sys.argv[1:] if argv is None else list(argv)
        os.execve(sys.executable, [sys.executable, "-m", module, *args], {**os.environ, "TRITON_INTERPRET": "1"})


def variants() -> dict:
    from kernels.paged_attention import VARIANTS  # imported late: a dry run sets TRITON_INTERPRET first

    return VARIANTS


def make_case(shape: tuple[int, int, int, int], requests: int, slots: int, dtype, device, seed: int) -> dict:
    """Random inputs (never zeros) with every request's pages shuffled over the pool."""
    hq, hkv, d, rows = shape
    pages_per = -(-slots // PAGE)
    num_pages = requests * hkv * pages_per + 1
    perm = torch.randperm(num_pages - 1, generator=torch.Generator().manual_seed(seed)) + 1  # 0: the trash page
    tables = perm.view(requests, hkv, pages_per).to(torch.int32).to(device)
    t = requests * rows
    gen = torch.Generator(device=device).manual_seed(seed)  # drawn where they live: ~1 GB a cache

    def rnd(*s):
        return torch.randn(*s, generator=gen, device=device, dtype=torch.float32).to(dtype)

    return dict(q=rnd(t, hq, d), k=rnd(t, hkv, d), v=rnd(t, hkv, d),
                cu=torch.arange(0, t + 1, rows, dtype=torch.int32, device=device),
                k_cache=rnd(num_pages * PAGE, d), v_cache=rnd(num_pages * PAGE, d),
                table_row=torch.arange(requests, dtype=torch.int32, device=device), block_tables=tables,
                slot_counts=torch.full((requests, hkv), slots, dtype=torch.int32, device=device), page_size=PAGE)


def min_bytes(c: dict, slots: int) -> int:
    requests, hkv = c["slot_counts"].shape
    cached = 2 * requests * hkv * slots * c["k_cache"].shape[1] * c["k_cache"].element_size()
    fresh = sum(c[n].numel() * c[n].element_size() for n in ("q", "k", "v")) + c["q"].numel() * c["q"].element_size()
    return cached + fresh


def timer(device: torch.device):
    """Median milliseconds of `fn` (device events on CUDA; one host-timed call in a dry run)."""
    if device.type == "cuda":
        import triton.testing

        return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")

    def once(fn):
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    return once


def graphed(fn, device: torch.device):
    """`fn` captured as a CUDA graph and replayed, as the engine runs a Reuse step: a one-request case
    takes tens of microseconds, less than launching it from Python (on the CPU: `fn` itself)."""
    if device.type != "cuda":
        return fn
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()  # compiled and warm before capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def copy_bandwidth(device: torch.device, time_ms, nbytes: int) -> float:
    """Bytes read plus written per second by a device-to-device copy of `nbytes`."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / (time_ms(lambda: dst.copy_(src)) * 1e-3)


def measure(c: dict, rows: int, configs: dict, time_ms, copy: float) -> list[dict]:
    """Each variant on one case: checked against the default's output (the first), then timed."""
    from kernels.paged_attention import paged_attention

    nbytes = min_bytes(c, int(c["slot_counts"].max()))
    # Copies of the cache to rotate through, so that a small case is not timed out of L2 (a GPU's).
    copies = min(7, ROTATE_BYTES // nbytes) if c["q"].device.type == "cuda" else 0
    caches = [(c["k_cache"], c["v_cache"])] + [(torch.randn_like(c["k_cache"]), torch.randn_like(c["v_cache"]))
                                               for _ in range(copies)]
    found, baseline = [], None
    for name, cfg in configs.items():
        out = torch.full_like(c["q"], float("nan"))  # poisoned: every row must be written
        paged_attention(**c, max_q_rows=rows, out=out, config=cfg)
        finite = bool(torch.isfinite(out).all())
        baseline = out.float().clone() if baseline is None else baseline  # (timing overwrites out)
        err = ((out.float() - baseline).norm() / baseline.norm()).item()

        def over_copies(cfg=cfg, out=out):  # one launch per cache copy
            for kc, vc in caches:
                paged_attention(**{**c, "k_cache": kc, "v_cache": vc}, max_q_rows=rows, out=out, config=cfg)
        ms = time_ms(graphed(over_copies, c["q"].device)) / len(caches)
        gbs = nbytes / (ms * 1e-3) / 1e9
        found.append({"variant": name, "config": asdict(cfg), "ms": round(ms, 4), "mbytes": round(nbytes / 1e6, 1),
                      "gb_s": round(gbs, 1), "of_copy_pct": round(100 * gbs * 1e9 / copy, 1),
                      "rel_err_vs_default": err, "ok": finite and err < 1e-2})
    return found


def run(device: torch.device, dtype, shapes: dict, cases: list, names: list[str] | None, seed: int = 0) -> dict:
    time_ms = timer(device)
    configs = {k: v for k, v in variants().items() if names is None or k in names or k == "default"}
    copy = copy_bandwidth(device, time_ms, 1 << 30 if device.type == "cuda" else 1 << 20)
    found = []
    for model, shape in shapes.items():
        for requests, slots in cases:
            case = make_case(shape, requests, slots, dtype, device, seed)
            found += [{"model": model, "requests": requests, "slots": slots, **r}
                      for r in measure(case, shape[3], configs, time_ms, copy)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter)"
    return {"device": name, "dtype": str(dtype).replace("torch.", ""), "copy_gb_s": round(copy / 1e9, 1),
            "rows": found}


def table(report: dict) -> str:
    lines = [f"paged attention, one layer, {report['dtype']}, {report['device']}: copy ceiling "
             f"{report['copy_gb_s']} GB/s",
             "| model | B | slots | variant | ms | GB/s | % of copy | ok |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['model']} | {r['requests']} | {r['slots']} | {r['variant']} | {r['ms']} | {r['gb_s']} | "
                     f"{r['of_copy_pct']} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny shapes (a check)")
    ap.add_argument("--variants", help="comma-separated names (default: all); the default always runs")
    ap.add_argument("--out", help="write the report here (JSON)")
    args = ap.parse_args(argv)
    if args.dry_run:
        interpreted(__spec__.name, argv)
        device, dtype = torch.device("cpu"), torch.float32
        shapes, cases = {"tiny-gqa": (4, 2, 32, 9)}, [(2, 40), (1, 17)]  # a check, kept short: interpreted
    else:
        if not torch.cuda.is_available():
            print("attention_bandwidth: no CUDA device (use --dry-run for the CPU check)", file=sys.stderr)
            return 1
        device, dtype, shapes, cases = torch.device("cuda"), torch.bfloat16, SHAPES, CASES
    names = args.variants.split(",") if args.variants else None
    unknown = set(names or []) - set(variants())
    if unknown:
        print(f"attention_bandwidth: unknown variants {sorted(unknown)}; known: {sorted(variants())}",
              file=sys.stderr)
        return 2
    report = run(device, dtype, shapes, cases, names)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print(table(report))
    return 0 if all(r["ok"] for r in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
