"""What a generate call returns, whatever the protocol, and how failures map to exit codes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

# Exit codes of `python -m client` (documented in the CLI's help).
OK = 0
FAILED = 1  # anything else
USAGE = 2  # argparse's own code for bad command lines
UNREACHABLE = 3  # no server at the URL, or the model is not ready
INVALID = 4  # the server rejected the request (INVALID_ARG / HTTP 400): fix the input
SERVER_ERROR = 5  # the server failed the request (INTERNAL, UNAVAILABLE, HTTP 5xx)
TIMEOUT = 124  # like timeout(1)
INTERRUPTED = 130  # Ctrl-C


class GenerateError(Exception):
    def __init__(self, message: str, exit_code: int = FAILED):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Generation:
    text: str = ""
    deltas: list[str] = field(default_factory=list)  # one entry per data response
    finish_reason: str | None = None
    num_input_tokens: int | None = None
    num_output_tokens: int = 0  # summed over the responses
    first_delta_s: float | None = None  # seconds from sending to the first non-empty text
    total_s: float | None = None

    def add(self, text: str, start: float, on_delta=None, finish_reason: str | None = None,
            num_input_tokens: int | None = None, num_output_tokens: int | None = None) -> None:
        """One data response (gRPC or HTTP alike): its text delta, finish reason and token counts."""
        self.deltas.append(text)
        self.text += text
        if text and self.first_delta_s is None:
            self.first_delta_s = time.monotonic() - start
        if on_delta is not None and text:
            on_delta(text)
        if finish_reason:
            self.finish_reason = finish_reason
        if num_input_tokens is not None:
            self.num_input_tokens = int(num_input_tokens)
        if num_output_tokens is not None:
            self.num_output_tokens += int(num_output_tokens)


def exit_code_for_message(message: str) -> int:
    """gRPC stream errors carry a message and no status code. The server starts every invalid-input
    message with the field's name ("max_tokens: ...") and its own failures with "internal error" or
    "request aborted"."""
    if message.startswith(("internal error", "request aborted")):
        return SERVER_ERROR
    head, sep, _ = message.partition(":")
    return INVALID if sep and head.replace("_", "").replace(".", "").isalnum() and " " not in head else FAILED


def exit_code_for_status(status: str | int | None) -> int:
    """Map a gRPC status name (e.g. "StatusCode.INVALID_ARGUMENT") or an HTTP status to an exit code."""
    if isinstance(status, int):
        if status == 400:
            return INVALID
        if status in (404, 503):
            return UNREACHABLE
        return SERVER_ERROR if status >= 500 else FAILED
    name = str(status or "").rsplit(".", 1)[-1]
    if name == "INVALID_ARGUMENT":
        return INVALID
    if name in ("UNAVAILABLE", "NOT_FOUND"):
        return UNREACHABLE
    if name == "DEADLINE_EXCEEDED":
        return TIMEOUT
    if name in ("INTERNAL", "UNKNOWN", "CANCELLED", "RESOURCE_EXHAUSTED"):
        return SERVER_ERROR
    return FAILED
