"""Every Triton kernel compiles for Hopper (sm_90) on this CPU machine: the interpreter the other
kernel tests use never compiles, so this is what stops a kernel the compiler rejects from landing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("triton.backends.nvidia", reason="triton without its CUDA backend")


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compiled, not interpreted
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600)


def test_every_kernel_launch_compiles_for_sm90():
    proc = _run(["-m", "benchmarks.compile_check", "--arch", "90"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.startswith("sm_90 ")]
    for kernel in ("_paged_attention_kernel", "_greedy_head_kernel", "_rms_norm_kernel", "_rotary_kernel",
                   "_silu_mul_kernel"):
        assert sum(kernel in line for line in lines) >= 4, kernel  # two models x two dtypes at least
    # bf16, the served dtype: the attention keeps everything in registers (no local memory).
    served = [line for line in lines if "paged_attention llada-8b bfloat16" in line]
    assert served and all("stack 0 B" in line for line in served), served
    assert any("dream-7b bfloat16 [gqa]" in line for line in lines)  # grouped: 7 query heads per KV head
    heads = [line for line in lines if "greedy_head" in line]  # the fused head spills in no dtype
    assert len(heads) >= 8 and all("stack 0 B" in line for line in heads), heads


def test_the_check_reports_a_kernel_the_compiler_rejects(tmp_path):
    """The stand-in compile is a real one: a kernel with mismatched dot shapes fails it."""
    script = textwrap.dedent("""
        import torch, triton, triton.language as tl
        from benchmarks.compile_check import _compiler

        @triton.jit
        def bad(X, O, BLOCK: tl.constexpr):
            a = tl.load(X + tl.arange(0, BLOCK)[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :])
            b = tl.load(X + tl.arange(0, 2 * BLOCK)[:, None] + tl.arange(0, BLOCK)[None, :])
            tl.store(O + tl.arange(0, BLOCK)[:, None] * BLOCK + tl.arange(0, BLOCK)[None, :], tl.dot(a, b))

        x = torch.randn(64, 64, dtype=torch.bfloat16)
        try:
            _compiler(90)(bad, (x, x), {"BLOCK": 16})
        except Exception as e:
            print("rejected:", type(e).__name__)
        else:
            print("compiled")
    """)
    path = tmp_path / "bad_kernel.py"  # @triton.jit needs its source in a file
    path.write_text(script)
    proc = _run([str(path)])
    assert "rejected: CompilationError" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
