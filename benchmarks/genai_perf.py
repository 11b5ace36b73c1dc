"""Run GenAI-Perf against the served dllm model, on top of the Perf Analyzer 2.50 of this project.

    python -m benchmarks.genai_perf --genai-perf /opt/gp/bin/genai-perf --concurrency 4

GenAI-Perf is a Python front end that writes Perf Analyzer input data, runs the `perf_analyzer`
found on PATH and summarizes its profile export. Checked with Perf Analyzer 2.50: genai-perf 0.0.8
(`--service-kind triton --backend vllm --streaming`) and 0.0.16 (the option became `--endpoint-type
kserve`; chosen here from its --help). Install it in its own virtual environment (it pulls another
tritonclient), and this script puts the project's perf_analyzer first on PATH. No hub access: the
tokenizer is the bundled model's directory, and the prompts are the benchmark workload's
(`--input-file`). Sampling parameters go through `--extra-inputs`, replacing GenAI-Perf's own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from backend.engine.config import DEFAULT_MODEL
from benchmarks import perf_analyzer, profiles
from benchmarks.loadtest import DEFAULT_OUT, profile_workload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.genai_perf", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--genai-perf", default="genai-perf", help="the genai-perf executable")
    ap.add_argument("--url", default="localhost:8001")
    ap.add_argument("--model", default="dllm")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--workload", default="closed-c4", help="whose prompts are sent")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32, help="one generation length for every request")
    ap.add_argument("--measurement-interval", type=int, default=10000, help="ms")
    ap.add_argument("--tokenizer", default=DEFAULT_MODEL, help="a local directory with tokenizer.json")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    prof = profiles.load_profile(args.profile)
    _, wl = profile_workload(prof, args.workload)
    stamp = time.strftime("%Y-%m-%d")
    art = args.out / f"{stamp}-genai-perf"
    art.mkdir(parents=True, exist_ok=True)
    prompts = art / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": i.text}) + "\n" for i in wl.items))
    sampling = json.dumps({**prof.get("sampling", {}), "max_tokens": args.max_tokens})
    env = perf_analyzer.environment()
    env["PATH"] = f"{Path(perf_analyzer.binary()).parent}:{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"
    helptext = subprocess.run([args.genai_perf, "profile", "--help"], capture_output=True, text=True, env=env).stdout
    kind = ["--service-kind", "triton"] if "--service-kind" in helptext else ["--endpoint-type", "kserve"]
    cmd = [args.genai_perf, "profile", "-m", args.model, *kind, "--backend", "vllm",
           "--streaming", "-u", args.url, "--concurrency", str(args.concurrency), "--input-file", str(prompts),
           "--tokenizer", args.tokenizer, "--extra-inputs", json.dumps({"sampling_parameters": sampling}),
           "--measurement-interval", str(args.measurement_interval), "--artifact-dir", str(art)]
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd, env=env).returncode
    # 0.0.8 writes into the artifact folder, later versions into a sub-folder per run.
    export = max(art.rglob("profile_export_genai_perf.json"), key=lambda p: p.stat().st_mtime, default=None)
    if rc != 0 or export is None:
        print(f"genai-perf failed (exit {rc})", file=sys.stderr)
        return rc or 1
    m = json.loads(export.read_text())
    summary = {k: m[k] for k in ("request_throughput", "output_token_throughput", "request_latency",
                                 "time_to_first_token", "inter_token_latency", "output_sequence_length") if k in m}
    version = subprocess.run([args.genai_perf, "--version"], capture_output=True, text=True, env=env).stdout.strip()
    (art / "summary.json").write_text(json.dumps({"genai_perf": version, "command": cmd, "metrics": summary},
                                                 indent=1) + "\n")
    print(f"{version}: {summary['request_throughput']['avg']:.2f} req/s, "
          f"{summary['output_token_throughput']['avg']:.1f} output tok/s (GenAI-Perf's own token count), "
          f"latency p50 {summary['request_latency']['p50']:.0f} ms, "
          f"TTFT p50 {summary['time_to_first_token']['p50']:.0f} ms; written to {art}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
