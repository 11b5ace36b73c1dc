"""`python -m client generate` against the real server: output and exit codes."""

from __future__ import annotations

import subprocess
import sys

SAMPLING = ["--max-tokens", "16", "--block-length", "16", "--steps", "16"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client", "generate", *args], capture_output=True, text=True,
                          timeout=60)


def test_cli_streams_over_grpc_and_answers_over_http(server, expected):
    want = expected("12+34=", max_tokens=16, block_length=16, steps=16)
    streamed = cli("12+34=", "--stream", "--url", server.grpc_url, *SAMPLING)
    assert (streamed.returncode, streamed.stdout) == (0, want + "\n"), streamed.stderr
    plain = cli("12+34=", "--protocol", "http", "--url", server.http_url, "-v", *SAMPLING)
    assert (plain.returncode, plain.stdout) == (0, want + "\n"), plain.stderr
    assert "finish_reason=" in plain.stderr


def test_cli_invalid_input_exits_4_naming_the_field(server):
    for proto, url in (("grpc", server.grpc_url), ("http", server.http_url)):
        run = cli("12+34=", "--protocol", proto, "--url", url, "--max-tokens", "0")
        assert run.returncode == 4, run.stderr
        assert run.stderr.startswith("error: max_tokens:"), run.stderr
