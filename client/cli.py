"""`python -m client generate "prompt"`: talk to the served dLLM model.

Exit codes: 0 done; 1 other failure; 2 bad command line; 3 server unreachable or model not ready;
4 the server rejected the request (invalid input: the message names the field); 5 the server failed
the request; 124 timed out; 130 interrupted (the request is cancelled on the server).
"""

from __future__ import annotations

import argparse
import json
import sys

from client.result import USAGE, GenerateError

DEFAULT_URLS = {"grpc": "localhost:8001", "http": "localhost:8000"}


def _value(text: str):
    """`--param key=value`: a JSON literal when it is one (16, 0.5, true, ["a"]), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def sampling_from_args(args) -> dict:
    sampling = {}
    if args.sampling_json:
        sampling = json.loads(args.sampling_json)
        if not isinstance(sampling, dict):
            raise ValueError("--sampling-json must be a JSON object")
    for item in args.param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {item!r}: expected key=value")
        sampling[key] = _value(value)
    for key in ("max_tokens", "block_length", "steps", "threshold", "temperature", "seed"):
        value = getattr(args, key)
        if value is not None:
            sampling[key] = value
    return sampling


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m client", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="generate text for a prompt")
    gen.add_argument("prompt", help="the prompt text ('-' reads it from standard input)")
    gen.add_argument("--stream", action="store_true", help="print deltas as they arrive")
    gen.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    gen.add_argument("--url", help="server address (default localhost:8001 for gRPC, localhost:8000 for HTTP)")
    gen.add_argument("--model", default="dllm")
    gen.add_argument("--max-tokens", dest="max_tokens", type=int)
    gen.add_argument("--block-length", dest="block_length", type=int)
    gen.add_argument("--steps", type=int)
    gen.add_argument("--threshold", type=float)
    gen.add_argument("--temperature", type=float)
    gen.add_argument("--seed", type=int)
    gen.add_argument("--param", action="append", metavar="KEY=VALUE",
                     help="any other sampling parameter (repeatable), e.g. --param stop='[\"\\n\"]'")
    gen.add_argument("--sampling-json", help="sampling parameters as one JSON object")
    gen.add_argument("--echo", action="store_true", help="non-streaming: print the prompt before the answer")
    gen.add_argument("--timeout", type=float, help="give up after this many seconds")
    gen.add_argument("-v", "--verbose", action="store_true", help="print finish reason, token counts, timings")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sampling = sampling_from_args(args)
    except (ValueError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return USAGE
    if args.stream and args.echo:
        print("error: --echo works without --stream only (streams never repeat the prompt)", file=sys.stderr)
        return USAGE
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if args.protocol == "grpc":
        from client.grpc_generate import generate
    else:
        from client.http_generate import generate

    def on_delta(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        out = generate(args.url or DEFAULT_URLS[args.protocol], args.model, prompt, sampling, args.stream,
                       exclude_input=not args.echo, timeout=args.timeout, on_delta=on_delta if args.stream else None)
    except GenerateError as e:
        if args.stream:
            sys.stdout.write("\n")
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if not args.stream:
        sys.stdout.write(out.text)
    sys.stdout.write("\n")
    if not out.num_output_tokens and not args.verbose:
        # An empty line alone reads like a broken server; it is the model's answer (e.g. EOS at once).
        print(f"note: empty generation (finish_reason={out.finish_reason}, 0 output tokens)", file=sys.stderr)
    if args.verbose:
        first = f"{out.first_delta_s:.3f}" if out.first_delta_s is not None else "-"
        print(f"finish_reason={out.finish_reason} input_tokens={out.num_input_tokens} "
              f"output_tokens={out.num_output_tokens} responses={len(out.deltas)} "
              f"first_delta_s={first} total_s={out.total_s:.3f}", file=sys.stderr)
    return 0
