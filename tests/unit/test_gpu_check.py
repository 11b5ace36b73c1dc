"""`benchmarks/gpu_check.sh --dry-run`: the GPU check's steps at tiny size on the CPU, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "BASELINE": str(tmp_path / "no-baseline")}
    env.pop("DLLM_KERNELS_ON_GPU", None)
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), str(tmp_path), "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "kernel tests: pass" in proc.stdout and "fp32 exactness: pass" in proc.stdout
    rows = json.loads((tmp_path / "agreement.json").read_text())
    assert rows and all(r["exact_fp32"] == r["requests"] for r in rows)
    bursts = json.loads((tmp_path / "bursts.json").read_text())["bursts"]
    assert [(b["tokens_per_step"], b["n"]) for b in bursts] == [(k, n) for k in (1, 2, 4) for n in (1, 4)]
    assert all(b["tok_per_s"] > 0 and b["steps"]["reuse"] > 0 for b in bursts)
    for b in bursts:  # steps = generation / tokens per step: each request takes that many steps
        assert b["generated"] == b["n"] * b["gen"]
        if b["n"] == 1:
            assert sum(b["steps"].values()) == b["gen"] // b["tokens_per_step"]
    head = json.loads((tmp_path / "decode_head.json").read_text())["rows"]
    assert head and all(r["token_agreement"] == 1.0 and r["fused_ms"] > 0 for r in head)
    capped = json.loads((tmp_path / "capped_pool.json").read_text())
    dense, *sparse = capped["rows"]
    assert [r["sparse_retention"] for r in capped["rows"]] == [1.0, 0.5, 0.25]
    assert dense["concurrency_max"] <= 2  # the pool holds 2.5 dense requests
    assert all(r["kv_mib_per_request_max"] < 0.75 * dense["kv_mib_per_request_max"] for r in sparse)
    attention = json.loads((tmp_path / "attention.json").read_text())["rows"]
    from benchmarks.attention_bandwidth import variants
    assert {r["variant"] for r in attention} == set(variants()) and all(r["ok"] for r in attention)
    # The table comes last, so that a truncated remote log still shows it.
    tail = proc.stdout.rstrip().splitlines()[-10:]
    assert any("tok/s" in line for line in tail) and tail[-1].split()[0] == "1"
