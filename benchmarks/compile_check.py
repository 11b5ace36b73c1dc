"""Compile every Triton kernel for a CUDA GPU on a machine that has none.

    python -m benchmarks.compile_check              # sm_90 (H100, H200)
    python -m benchmarks.compile_check --arch 80    # A100

The CPU tests run the kernels under TRITON_INTERPRET=1, which executes their Python and never
compiles them: a kernel the compiler rejects would pass every CPU test. Here each public launcher
runs on small CPU tensors at LLaDA-8B's and Dream-7B's shapes with the kernel's launch replaced by a
compile for the target, from the launch's own arguments and with Triton's own specialisation
(16-byte aligned pointers, integers divisible by 16 or equal to 1), as the launcher on a GPU would
compile them. It reports each kernel's shared memory and, through the `cuobjdump` in Triton's wheel,
its registers and spills (spills move an array to local memory: slow). Needs no driver.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from backend.models.model_config import PRESETS, ModelConfig

MODELS = ("llada-8b", "dream-7b")  # the served models' shapes (backend.models.model_config.PRESETS)
BLOCK = 32  # their block length: a Reuse step's query rows, plus the logit shift's row


def _compiler(arch: int):
    """A launch stand-in: (kernel, args, kwargs) -> the kernel compiled for `arch`."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)

    def compile_launch(fn, args, kwargs):
        kwargs = {"debug": False, **kwargs}
        binder = create_function_from_signature(fn.signature, fn.params, backend)
        bound, specialization, options = binder(*args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, specialization, options)
        return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)
    return compile_launch


def _paged_args(cfg: ModelConfig, dtype: torch.dtype, gen: torch.Generator) -> dict:
    """Two requests of a block of query rows each, their caches over pages of 16."""
    hq, hkv, d, rows = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, BLOCK + cfg.logit_shift
    t, b, pages, page = 2 * rows, 2, 8, 16
    slots = b * hkv * pages * page
    return dict(q=_rnd(gen, dtype, t, hq, d), k=_rnd(gen, dtype, t, hkv, d), v=_rnd(gen, dtype, t, hkv, d),
                cu=torch.tensor([0, rows, t], dtype=torch.int32), k_cache=_rnd(gen, dtype, slots, d),
                v_cache=_rnd(gen, dtype, slots, d), table_row=torch.arange(b, dtype=torch.int32),
                block_tables=torch.arange(b * hkv * pages, dtype=torch.int32).view(b, hkv, pages),
                slot_counts=torch.full((b, hkv), pages * page - 3, dtype=torch.int32), page_size=page, max_q_rows=rows)


def _rnd(gen: torch.Generator, dtype: torch.dtype, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen).to(dtype)


def _head_args(cfg: ModelConfig, dtype: torch.dtype, rows: int, gen: torch.Generator) -> dict:
    """The fused greedy head over the model's whole vocabulary. The weight is never read (only the launch
    is), so it stays an untouched allocation."""
    hidden = _rnd(gen, dtype, rows + 3, cfg.hidden_size)
    return dict(hidden=hidden, hidden_index=torch.arange(rows), mask_token_id=cfg.mask_token_id,
                weight=torch.empty(cfg.vocab_size, cfg.hidden_size, dtype=dtype), scale=cfg.logit_scale)


def _launches(dtypes: tuple):
    """(label, launcher call) for every kernel at every served shape, on small CPU tensors."""
    from kernels.fused_decode_head import greedy_head
    from kernels.paged_attention import paged_attention
    from kernels.rms_norm import rms_norm
    from kernels.rotary import rotary
    from kernels.swiglu import silu_mul

    gen = torch.Generator().manual_seed(0)
    for name in MODELS:
        cfg = PRESETS[name]
        hq, hkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        hidden, inter = cfg.hidden_size, cfg.intermediate_size
        for dtype in dtypes:
            tag = f"{name} {str(dtype).replace('torch.', '')}"
            pa, x, w = _paged_args(cfg, dtype, gen), _rnd(gen, dtype, 4, hidden), _rnd(gen, dtype, hidden)
            q, k, gu = _rnd(gen, dtype, 4, hq, d), _rnd(gen, dtype, 4, hkv, d), _rnd(gen, dtype, 4, 2 * inter)
            cos, sin, pos = torch.randn(64, d, generator=gen), torch.randn(64, d, generator=gen), torch.arange(4)
            yield f"paged_attention {tag}", lambda pa=pa: paged_attention(**pa)
            for rows in (BLOCK, 4 * BLOCK):  # one request's block; several (row tiles of 32 and 64)
                gh = _head_args(cfg, dtype, rows, gen)
                yield f"greedy_head {rows} rows {tag}", lambda gh=gh: greedy_head(**gh)
            yield f"rms_norm {tag}", lambda x=x, w=w: rms_norm(x, w, 1e-5)
            yield f"rms_norm+residual {tag}", lambda x=x, w=w: rms_norm(x, w, 1e-5, residual=x.clone())
            yield f"rotary {tag}", lambda q=q, k=k, c=cos, s=sin, p=pos: rotary(q, k, p, c, s)
            yield f"silu_mul {tag}", lambda gu=gu: silu_mul(gu)


def _resources(cubin: bytes, warps: int, shared: int) -> str:
    """Registers, stack and spills from the cubin (cuobjdump beside Triton's ptxas, if present), and
    the programs an SM holds at once (Hopper: 64K registers, 228 KB shared memory, 64 warps)."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists():
        return "(no cuobjdump)"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if not m:
        return "(no resource line)"
    regs, stack = int(m.group(1)), int(m.group(2))
    per_sm = min(32, 64 // warps, 65536 // (-(-regs // 8) * 8 * 32 * warps), (228 << 10) // max(shared + 1024, 1))
    # a stack frame holds what did not fit in registers: local memory, slow
    return (f"{regs} registers, stack {stack} B, {per_sm} programs/SM" +
            ("  <- spills to local memory" if stack else ""))


def check(arch: int = 90, dtypes: tuple = (torch.bfloat16, torch.float32), variants: bool = True) -> list[dict]:
    """Compile every launch, and the paged attention's benchmarked launch variants (bf16)."""
    from triton.runtime.jit import JITFunction

    import kernels.fused_decode_head
    import kernels.paged_attention as pa_mod
    import kernels.rms_norm
    import kernels.rotary
    import kernels.swiglu

    compile_launch = _compiler(arch)
    modules = (pa_mod, kernels.fused_decode_head, kernels.rms_norm, kernels.rotary, kernels.swiglu)
    kernel_objs = [obj for m in modules for obj in vars(m).values() if isinstance(obj, JITFunction)]
    captured: list = []
    saved = [k.run for k in kernel_objs]

    def stand_in(kernel):  # what `kernel[grid](...)` calls: record the launch instead of running it
        return lambda *args, grid, warmup, **kw: captured.append((kernel, args, kw))
    for k in kernel_objs:
        k.run = stand_in(k)
    try:
        calls = list(_launches(dtypes))
        if variants:  # LLaDA-8B's shape; the GQA-grouped ones at Dream-7B's too (7 query heads per KV head)
            for model in MODELS:
                pa = _paged_args(PRESETS[model], torch.bfloat16, torch.Generator().manual_seed(1))
                for name, cfg in pa_mod.VARIANTS.items():
                    if model == "llada-8b" or cfg.grouped:
                        calls.append((f"paged_attention {model} bfloat16 [{name}]",
                                      lambda cfg=cfg, pa=pa: pa_mod.paged_attention(**pa, config=cfg)))
        rows = []
        for label, call in calls:
            captured.clear()
            call()
            for k, args, kw in captured:
                try:
                    ck = compile_launch(k, args, kw)
                    rows.append({"launch": label, "kernel": k.__name__, "ok": True, "shared": ck.metadata.shared,
                                 "resources": _resources(ck.asm["cubin"], ck.metadata.num_warps, ck.metadata.shared)})
                except Exception as e:  # noqa: BLE001  (what the compiler says is the finding)
                    rows.append({"launch": label, "kernel": k.__name__, "ok": False,
                                 "error": f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}"})
        return rows
    finally:
        for k, run in zip(kernel_objs, saved, strict=True):
            k.run = run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: Hopper, 80: Ampere)")
    ap.add_argument("--no-variants", action="store_true", help="the engine's launches only")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        print("compile_check: TRITON_INTERPRET is set; the kernels must be compiled, not interpreted "
              "(run it in a shell without it)", file=sys.stderr)
        return 2
    rows = check(args.arch, variants=not args.no_variants)
    for r in rows:
        detail = f"shared {r['shared']} B, {r['resources']}" if r["ok"] else f"FAILED {r['error']}"
        print(f"sm_{args.arch} {r['launch']:<48} {r['kernel']:<24} {detail}")
    failed = sum(not r["ok"] for r in rows)
    print(f"compile_check: {len(rows) - failed} of {len(rows)} launches compile for sm_{args.arch}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
