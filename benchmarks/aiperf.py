"""Run AIPerf (NVIDIA's successor of GenAI-Perf) against the served dllm model, and score its answers.

    make aiperf-deps                                   # AIPerf 0.13.0 in its own virtual environment
    python -m benchmarks.aiperf --concurrency 4            # against `make serve` on localhost:8000

AIPerf speaks HTTP only (no Triton gRPC); its `template` endpoint sends any JSON body, so each request
goes to Triton's `/v2/models/dllm/generate_stream` as `{"text_input": ..., "stream": true,
"exclude_input_in_output": true, "sampling_parameters": "<json>"}` and the streamed `text_output`
deltas are read back from the Server-Sent Events. The prompts are a benchmark workload's task prompts
(`--input-file`), the tokenizer that counts tokens is the bundled model's directory (no hub access),
and `--export-outputs-json` gives the answers, which are scored against the tasks' exact answers.
With `--openai` it profiles the OpenAI-compatible server instead (`make serve-openai`, port 9000) the way
AIPerf is at its best: `--endpoint-type chat --streaming`, each prompt a user message, the sampling
parameters as extra body keys; its summary goes to `<date>-openai-aiperf/summary.json`.
AIPerf lives in `.venv/aiperf/`, a virtual environment of its own, so that its ~1 GB of dependencies
(pandas, pyarrow, scipy, transformers, ...) stay out of the project's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from backend.engine.config import DEFAULT_MODEL
from benchmarks import profiles
from benchmarks.loadtest import DEFAULT_OUT, profile_workload

REPO_ROOT = Path(__file__).resolve().parents[1]
AIPERF_VERSION = "0.13.0"  # `make aiperf-deps` installs this one
DEFAULT_AIPERF = REPO_ROOT / ".venv" / "aiperf" / "bin" / "aiperf"
TEMPLATE = ('{"text_input": {{ text|tojson }}, "stream": {{ stream|tojson }}, '
            '"exclude_input_in_output": true}')


def executable(path: str | None) -> str:
    found = path or (str(DEFAULT_AIPERF) if DEFAULT_AIPERF.is_file() else shutil.which("aiperf"))
    if not found or not Path(found).is_file():
        raise FileNotFoundError(f"aiperf: not found (run `make aiperf-deps`, which installs aiperf=={AIPERF_VERSION} "
                                "into .venv/aiperf/)")
    return found


def command(aiperf: str, url: str, model: str, prompts: Path, sampling: dict, concurrency: int,
            request_count: int, tokenizer: str, out: Path, openai: bool = False) -> list[str]:
    if openai:  # /v1/chat/completions; the dLLM's settings ride along as extra body keys
        endpoint = ["--endpoint-type", "chat", "--streaming", "--extra-inputs", json.dumps(sampling, sort_keys=True)]
    else:
        extra = {"payload_template": TEMPLATE, "response_field": "text_output",
                 "sampling_parameters": json.dumps(sampling, sort_keys=True)}
        endpoint = ["--endpoint-type", "template", "--custom-endpoint", f"/v2/models/{model}/generate_stream",
                    "--streaming", "--extra-inputs", json.dumps(extra)]
    return [aiperf, "profile", "-m", model, "--url", url, *endpoint, "--tokenizer", tokenizer,
            "--input-file", str(prompts), "--custom-dataset-type", "single_turn",
            "--concurrency", str(concurrency), "--request-count", str(request_count),
            "--artifact-dir", str(out), "--export-outputs-json", "--ui-type", "none"]


def score(art: Path, answers: dict[str, str]) -> tuple[int, int]:
    """(exact answers, answers scored) from AIPerf's inputs.json and outputs.json."""
    def prompt(payload: dict) -> str:  # generate_stream's body, or a chat's (--openai)
        return payload["text_input"] if "text_input" in payload else payload["messages"][-1]["content"]

    sent = {s["session_id"]: prompt(s["payloads"][0]) for s in json.loads((art / "inputs.json").read_text())["data"]}
    right = total = 0
    for rec in json.loads((art / "outputs.json").read_text())["data"]:
        prompt = sent.get(rec["conversation_id"])
        if prompt in answers:
            total += 1
            right += rec.get("response_text", "") == answers[prompt]
    return right, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.aiperf", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--aiperf", help=f"the aiperf executable (default {DEFAULT_AIPERF.relative_to(REPO_ROOT)}, "
                    "else the one on PATH)")
    ap.add_argument("--url", help="Triton's HTTP address (default localhost:8000), or with --openai the OpenAI "
                    "server's (default localhost:9000)")
    ap.add_argument("--openai", action="store_true", help="profile the OpenAI-compatible server's "
                    "/v1/chat/completions (make serve-openai) instead of Triton's generate_stream")
    ap.add_argument("--model", default="dllm")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--workload", default="closed-c4", help="whose prompts are sent")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--request-count", type=int, help="default: one request per workload prompt")
    ap.add_argument("--max-tokens", type=int, default=32, help="one generation length for every request")
    ap.add_argument("--tokenizer", default=str(DEFAULT_MODEL), help="a local directory with tokenizer.json")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    try:
        aiperf = executable(args.aiperf)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prof = profiles.load_profile(args.profile)
    _, wl = profile_workload(prof, args.workload)
    url = args.url or ("localhost:9000" if args.openai else "localhost:8000")
    art = args.out / f"{time.strftime('%Y-%m-%d')}-{'openai-' if args.openai else ''}aiperf"
    art.mkdir(parents=True, exist_ok=True)
    prompts = art / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"text": i.text}) + "\n" for i in wl.items))
    answers = {i.text: i.answer for i in wl.items if i.answer is not None}
    sampling = {**prof.get("sampling", {}), "max_tokens": args.max_tokens}
    cmd = command(aiperf, url, args.model, prompts, sampling, args.concurrency,
                  args.request_count or len(wl.items), args.tokenizer, art, openai=args.openai)
    # No HF_HUB_OFFLINE here: AIPerf 0.13 then takes the local tokenizer directory for a hub name and fails.
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    export = art / "profile_export_aiperf.json"
    if rc != 0 or not export.is_file():
        print(f"aiperf failed (exit {rc}); its log: {art / 'logs' / 'aiperf.log'}", file=sys.stderr)
        return rc or 1
    m = json.loads(export.read_text())
    keys = ("request_count", "request_throughput", "output_token_throughput", "request_latency",
            "time_to_first_token", "inter_token_latency", "output_sequence_length", "error_request_count")
    summary = {k: m[k] for k in keys if m.get(k) is not None}
    right, total = score(art, answers)
    version = m.get("aiperf_version", "?")
    (art / "summary.json").write_text(json.dumps({"aiperf": version, "command": cmd, "metrics": summary,
                                                  "exact_answers": [right, total]}, indent=1) + "\n")
    print(f"aiperf {version}: {summary['request_count']['avg']:.0f} requests, "
          f"{summary['request_throughput']['avg']:.2f} req/s, "
          f"{summary['output_token_throughput']['avg']:.1f} output tok/s, "
          f"latency p50 {summary['request_latency']['p50']:.0f} ms, "
          f"TTFT p50 {summary['time_to_first_token']['p50']:.0f} ms, "
          f"exact answers {right}/{total}; written to {art}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
