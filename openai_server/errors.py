"""OpenAI error objects (`{"error": {"message", "type", "param", "code"}}`) and the HTTP status each
kind of failure gets: 400 the client's mistake (the message starts with the field's name, `param` names
it), 404 a model this server does not serve, 503 Triton unreachable or the model not ready, 500 ours."""

from __future__ import annotations

import re

# The model's refusals start with the field's name ("max_tokens: must be ..."), as ours do.
_FIELD_FIRST = re.compile(r"^([A-Za-z_][A-Za-z0-9_.\[\]]{0,127}): ")

TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 413: "invalid_request_error", 500: "server_error",
         503: "service_unavailable"}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": TYPES.get(self.status, "server_error"),
                          "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None) -> APIError:
    """A 400 whose `param` is the field the message starts with (unless given)."""
    if param is None:
        match = _FIELD_FIRST.match(message)
        param = match.group(1) if match else None
    return APIError(400, message, param)


def field_of(message: str) -> str | None:
    match = _FIELD_FIRST.match(message)
    return match.group(1) if match else None


def unknown_model(name: str, served: list[str]) -> APIError:
    return APIError(404, f"model: {name!r} is not served here (served: {', '.join(served)})", "model",
                    "model_not_found")


def unavailable(message: str) -> APIError:
    return APIError(503, message)


def internal(message: str) -> APIError:
    return APIError(500, f"internal error: {message}")
