"""The client CLI's argument handling and exit codes (the server side is in tests/integration)."""

import pytest

from client import result
from client.cli import build_parser, main, sampling_from_args


def test_sampling_parameters_from_flags_params_and_json():
    args = build_parser().parse_args(["generate", "p", "--max-tokens", "8", "--param", "stop=[\"\\n\"]",
                                      "--param", "remasking=random", "--sampling-json", '{"seed": 4}'])
    assert sampling_from_args(args) == {"seed": 4, "stop": ["\n"], "remasking": "random", "max_tokens": 8}


@pytest.mark.parametrize("argv", [["generate", "p", "--param", "novalue"], ["generate", "p", "--sampling-json", "[1]"],
                                  ["generate", "p", "--stream", "--echo"]])
def test_bad_command_lines_exit_2(argv, capsys):
    assert main(argv) == result.USAGE
    assert capsys.readouterr().err.startswith("error:")


def test_unreachable_server_exits_3(capsys):
    assert main(["generate", "p", "--protocol", "http", "--url", "127.0.0.1:9", "--timeout", "5"]) == \
        result.UNREACHABLE


@pytest.mark.parametrize("message, code", [
    ("max_tokens: must be at least 1, got 0", result.INVALID),
    ("sampling_parameters: not valid JSON", result.INVALID),
    ("internal error: RuntimeError: boom", result.SERVER_ERROR),
    ("request aborted: the model is unloading", result.SERVER_ERROR),
    ("[request id: <id_unknown>] expected 7 inputs but got 1", result.FAILED),
])
def test_grpc_stream_messages_map_to_exit_codes(message, code):
    assert result.exit_code_for_message(message) == code


@pytest.mark.parametrize("status, code", [(400, result.INVALID), (500, result.SERVER_ERROR), (503, result.UNREACHABLE),
                                          ("StatusCode.INVALID_ARGUMENT", result.INVALID)])
def test_statuses_map_to_exit_codes(status, code):
    assert result.exit_code_for_status(status) == code
