"""The fused greedy decode head against the budgeted head it replaces for greedy low_confidence steps:
milliseconds per step's decode, the head's weight read against the card's copy bandwidth, agreement.

    python -m benchmarks.decode_head_timing --out head.json     # CUDA: LLaDA-8B's head, bf16
    python -m benchmarks.decode_head_timing --dry-run           # CPU, interpreter, tiny shapes (a check)

Rows are a step's decoded rows: one request's block (32), 16 requests' (512), 64 requests' (2,048).
The budgeted head projects them in chunks of `logit_budget_bytes` (the engine's 64 MiB) and reduces
each chunk with `pick_tokens`; the fused head never forms the logits. The fewest bytes either must
move is one read of the vocabulary matrix (1 GB at LLaDA-8B), so at few rows both are bound by that
read: `of_copy_pct` is its bandwidth against a device-to-device copy's (reads plus writes).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from backend.models.model_config import PRESETS
from benchmarks.attention_bandwidth import copy_bandwidth, interpreted, timer

ROWS = (32, 512, 2048)
LOGIT_BUDGET = 64 << 20  # the engine's default logit_budget_bytes


def _head(vocab: int, hidden: int, dtype, device, gen: torch.Generator):
    from backend.models.layers import VocabHead

    head = VocabHead(hidden, vocab).to(device)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden, generator=gen, device=device) / hidden ** 0.5 * 3)
    return head.to(dtype)


def _rows(n: int, device):
    from backend.engine.runner.decode_head import DecodeRows

    z = torch.zeros(n, dtype=torch.long, device=device)
    return DecodeRows(torch.arange(n, device=device), torch.arange(n, device=device),
                      torch.zeros(n, dtype=torch.float64, device=device), z, z, torch.zeros(n, dtype=torch.bool,
                                                                                            device=device))


def measure(model: str, vocab: int, hidden: int, mask: int, rows: list[int], dtype, device, time_ms, copy: float
            ) -> list[dict]:
    from backend.engine.runner.decode_head import budgeted_decode, fused_greedy_decode

    gen = torch.Generator(device=device).manual_seed(0)
    head = _head(vocab, hidden, dtype, device, gen)
    weight_bytes = head.matrix.numel() * head.matrix.element_size()
    found = []
    for n in rows:
        h = torch.randn(n, hidden, generator=gen, device=device).to(dtype)
        dr = _rows(n, device)

        def budgeted(h=h, dr=dr):
            return budgeted_decode(h, head, dr, LOGIT_BUDGET, mask, sampling=False, any_random=False,
                                   any_dream=False, any_filter=False)[:2]

        def fused(h=h, dr=dr):
            return fused_greedy_decode(h, head, dr, mask)
        (t_b, c_b), (t_f, c_f) = budgeted(), fused()
        same = t_b == t_f
        row = {"model": model, "rows": n, "vocab": vocab, "hidden": hidden,
               "token_agreement": round(float(same.float().mean()), 4),
               "conf_max_rel_err": float(((c_f - c_b).abs() / c_b.abs().clamp_min(1e-30))[same].max())
               if bool(same.any()) else None}
        for name, fn in (("budgeted", budgeted), ("fused", fused)):
            ms = time_ms(fn)  # eager, launches included: the engine decodes outside its CUDA graphs
            row[f"{name}_ms"] = round(ms, 4)
            row[f"{name}_of_copy_pct"] = round(100 * weight_bytes / (ms * 1e-3) / copy, 1)
        row["speedup"] = round(row["budgeted_ms"] / row["fused_ms"], 2)
        found.append(row)
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.decode_head_timing", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny shapes (a check)")
    ap.add_argument("--out", help="write the report here (JSON)")
    args = ap.parse_args(argv)
    if args.dry_run:
        interpreted(__spec__.name, argv)
        device, dtype = torch.device("cpu"), torch.float32
        shapes, rows = {"tiny": (300, 64, 77)}, [5, 40]
    else:
        if not torch.cuda.is_available():
            print("decode_head_timing: no CUDA device (use --dry-run for the CPU check)", file=sys.stderr)
            return 1
        device, dtype, rows = torch.device("cuda"), torch.bfloat16, list(ROWS)
        cfg = PRESETS["llada-8b"]
        shapes = {"llada-8b": (cfg.vocab_size, cfg.hidden_size, cfg.mask_token_id)}
    time_ms = timer(device)
    copy = copy_bandwidth(device, time_ms, 1 << 30 if device.type == "cuda" else 1 << 20)
    found = []
    with torch.inference_mode():
        for model, (vocab, hidden, mask) in shapes.items():
            found += measure(model, vocab, hidden, mask, rows, dtype, device, time_ms, copy)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter)"
    report = {"device": name, "dtype": str(dtype).replace("torch.", ""), "copy_gb_s": round(copy / 1e9, 1),
              "rows": found}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print(table(report))
    return 0 if all(r["token_agreement"] >= 0.95 for r in found) else 1


def table(report: dict) -> str:
    lines = [f"decode head ({report['device']}, {report['dtype']}, copy {report['copy_gb_s']} GB/s): "
             "budgeted -> fused ms (weight read % of copy), token agreement"]
    for r in report["rows"]:
        lines.append(f"  {r['model']} rows={r['rows']}: {r['budgeted_ms']} ({r['budgeted_of_copy_pct']}%) -> "
                     f"{r['fused_ms']} ({r['fused_of_copy_pct']}%), x{r['speedup']}, agree {r['token_agreement']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
