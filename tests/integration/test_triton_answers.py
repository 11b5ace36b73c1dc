"""What Triton answers itself, as the README's Errors section documents it (issue 20): every row of its
HTTP table is sent as its example says, to `generate` and `generate_stream`, and must get that status
and message; the gRPC refusals it names; and `stream: true` on `generate`, which Triton 2.51 gives the
model no way to refuse: the documented 200 with an error body after the whole generation, and a
computation that stops (aborted in the engine) once the client closes the connection."""

from __future__ import annotations

import json
import re
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.calls import GrpcStreams, grpc_inputs, metric, scrape_metrics
from tests.integration.test_readme_examples import REPO

ENDPOINTS = ("generate", "generate_stream")
# Many responses (a delta per block), and long enough on a CPU to be still running when the client leaves.
MANY = {"max_tokens": 64, "block_length": 8, "steps": 64, "ignore_eos": True}
LONG = {"max_tokens": 448, "block_length": 8, "steps": 448, "ignore_eos": True}
ONE_RESPONSE_ONLY = ('{"error":"generate expects model to produce exactly 1 response, use generate stream for '
                     'model that generates various number of responses"}')


def errors_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("### Errors\n")
    return text[start:text.index("\n### ", start + 1)]


def flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def http_rows() -> list[tuple[str, str, int, str]]:
    """(case, example, status, message) of the README's table of what Triton answers over HTTP."""
    section = errors_section()
    table = section[section.index("| request (HTTP) |"):]
    rows = []
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        case, example, status, message = (c.strip() for c in line.strip("|").split(" | "))
        rows.append((case, example.strip("`"), int(status), message.strip("`")))
    return rows


def pattern(message: str) -> re.Pattern:
    """A documented message as a pattern: `<...>` stands for any text."""
    return re.compile("".join(".+?" if part.startswith("<") and part.endswith(">") and part != "<id_unknown>"
                              else re.escape(part) for part in re.split(r"(<[^>]+>)", message)))


def send(server, example: str, endpoint: str) -> tuple[int, str]:
    """The README's example as a request: a method and path, a header, no body, or the body itself."""
    method, path, body, headers = "POST", f"/v2/models/dllm/{endpoint}", example.encode(), {}
    if re.match(r"^(GET|POST) /", example):
        method, path = example.split(" ", 1)
        body = json.dumps({"text_input": "1+1="}).encode() if method == "POST" else None
    elif example.startswith("Content-Encoding: "):
        headers = {"Content-Encoding": example.split(": ", 1)[1]}
        body = json.dumps({"text_input": "1+1="}).encode()
    elif example == "(none)":
        body = b""
    req = urllib.request.Request(f"http://{server.http_url}{path}", data=body, method=method,
                                 headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_every_documented_http_case_gets_the_documented_status_and_message(server):
    rows = http_rows()
    assert len(rows) >= 15, rows
    for case, example, status, message in rows:
        for endpoint in ENDPOINTS if not re.match(r"^(GET|POST) /", example) else ("",):
            got_status, body = send(server, example, endpoint)
            got = json.loads(body)["error"]
            assert (got_status, bool(pattern(message).fullmatch(got))) == (status, True), \
                f"README row {case!r} via {endpoint or example}: {got_status} {got!r}, documented {status} {message!r}"


def test_the_documented_grpc_refusals(server):
    def tensor(name, dtype, values):
        t = grpcclient.InferInput(name, [len(values)], dtype)
        t.set_data_from_numpy(np.array(values, dtype=np.object_ if dtype == "BYTES" else np.int32))
        return t

    prompt = tensor("text_input", "BYTES", [b"1+1="])
    cases = [([prompt, tensor("stream", "BYTES", [b"true"])],
              "[request id: <id>] inference input 'stream' data-type is 'BYTES', but model 'dllm' expects 'BOOL'"),
             ([prompt, tensor("foo", "BYTES", [b"x"])], "unexpected inference input 'foo' for model 'dllm'"),
             ([tensor("text_input", "BYTES", [b"1+1=", b"2+2="])],
              "[request id: <id>] unexpected shape for input 'text_input' for model 'dllm'. Expected [1], got [2]. "),
             ("nope", "Request for unknown model: 'nope' is not found")]
    documented = flat(errors_section())
    for inputs, message in cases:
        assert f"`{message}`" in documented, f"README no longer documents {message!r}"
        streams = GrpcStreams(server.grpc_url)
        try:
            if inputs == "nope":
                streams.send("one", grpc_inputs("1+1="), model="nope")
            else:
                streams.send("one", inputs)
            error = streams.wait_all(60)["one"].error
        finally:
            streams.close()
        assert error is not None and pattern(message).fullmatch(error), (message, error)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        client.infer("dllm", grpc_inputs("1+1=", MANY))
        raise AssertionError("ModelInfer answered a decoupled model")
    except InferenceServerException as e:
        assert e.status() == "StatusCode.UNIMPLEMENTED"
        assert e.message().endswith("ModelInfer RPC doesn't support models with decoupled transaction policy")
    finally:
        client.close()
    assert "`ModelInfer RPC doesn't support models with decoupled transaction policy`" in documented


def _counts(server) -> dict[str, float]:
    m = scrape_metrics(server.metrics_port)
    return {reason: metric(m, "dllm:requests_total", finish_reason=reason) for reason in ("abort", "length")} | {
        "running": metric(m, "dllm:num_requests_running"), "pages": metric(m, "dllm:kv_pages_used")}


def test_stream_true_on_generate_runs_to_the_end_and_answers_200_with_an_error_body(server):
    assert ONE_RESPONSE_ONLY in flat(errors_section())
    before = _counts(server)
    status, body = send(server, json.dumps({"text_input": "copy abcdefgh =", "stream": True, "parameters": MANY}),
                        "generate")
    assert (status, body) == (200, ONE_RESPONSE_ONLY)
    after = _counts(server)  # computed to the end: nothing cancelled it
    assert after["length"] >= before["length"] + 1 and after["abort"] == before["abort"], (before, after)
    # A text that arrives in one response comes back as usual.
    status, body = send(server, json.dumps({"text_input": "12+34=", "stream": True,
                                            "parameters": {"max_tokens": 16, "block_length": 16, "steps": 16}}),
                        "generate")
    assert status == 200 and "text_output" in json.loads(body), body


def test_stream_true_on_generate_stops_computing_when_the_client_leaves(server):
    before = _counts(server)
    body = json.dumps({"text_input": "copy abcdefghij =", "stream": True, "parameters": LONG}).encode()
    host, port = server.http_url.split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    try:
        sock.sendall(b"POST /v2/models/dllm/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        head = sock.recv(4096)  # the frontend sends 200 and the headers at the model's first response
        assert head.startswith(b"HTTP/1.1 200 OK"), head
    finally:
        sock.close()
    end = time.monotonic() + 15
    while True:
        now = _counts(server)
        if now["abort"] == before["abort"] + 1 and now["running"] == 0 and now["pages"] == 0:
            break
        assert time.monotonic() < end, f"the request was not aborted after the client left: {before} -> {now}"
        time.sleep(0.1)
