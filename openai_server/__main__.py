"""python -m openai_server [--host 127.0.0.1] [--port 9000] [--triton-url localhost:8001] [--model dllm] ...

The OpenAI-compatible server alone, in front of a tritonserver that runs elsewhere (`make serve`, the
Docker image); `python -m openai_server.launch` (`make serve-openai`) starts both."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_TOKENIZER = Path(__file__).resolve().parents[1] / "model_repository" / "dllm" / "1" / "default-model"


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m openai_server", description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=9000)
    ap.add_argument("--triton-url", default="localhost:8001", help="Triton's gRPC address")
    ap.add_argument("--model", default="dllm", help="the model's name in Triton")
    ap.add_argument("--served-model-name", action="append",
                    help="the name clients use in `model` (repeat for aliases; default: --model)")
    ap.add_argument("--tokenizer", type=Path, default=DEFAULT_TOKENIZER,
                    help="the checkpoint directory whose chat template renders chats (default: the bundled model's)")
    ap.add_argument("--log-level", default="warning", help="uvicorn's log level (info logs every request)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not args.tokenizer.is_dir():
        print(f"error: --tokenizer: {args.tokenizer} is not a directory", file=sys.stderr)
        return 2
    import uvicorn

    from openai_server.app import ServerConfig, create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = ServerConfig(triton_url=args.triton_url, triton_model=args.model,
                          served_names=args.served_model_name or [args.model], tokenizer_dir=args.tokenizer)
    # One worker: a process of its own needs no more for a proxy that mostly waits on Triton; the event loop
    # serves thousands of open streams. Keep-alive: clients reuse their connections.
    uvicorn.run(create_app(config), host=args.host, port=args.port, log_level=args.log_level,
                timeout_keep_alive=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
