"""Safe network defaults: loopback only, administrative APIs closed unless a key or openness is asked for."""

import pytest

from backend.serving import tritonserver
from backend.serving.network import ADMIN_HEADER, GRPC_ADMIN_HEADER, admin_headers, network_args


def test_defaults_bind_loopback_and_close_the_admin_apis(tmp_path):
    cmd = tritonserver.server_command(tritonserver.layout(tmp_path), tmp_path)
    assert {"--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"} <= set(cmd)
    http = next(a for a in cmd if a.startswith("--http-restricted-api="))
    grpc = next(a for a in cmd if a.startswith("--grpc-restricted-protocol="))
    apis, _, header = http.split("=", 1)[1].partition(":")
    assert set(apis.split(",")) == {"model-repository", "shared-memory", "trace", "logging"}
    key = header.split("=", 1)[1]
    assert header.startswith(f"{ADMIN_HEADER}=") and len(key) >= 24  # random: nobody knows it
    assert grpc.endswith(f":{ADMIN_HEADER}={key}")
    other = tritonserver.server_command(tritonserver.layout(tmp_path), tmp_path)
    assert next(a for a in other if a.startswith("--http-restricted-api=")) != http  # a new key each start


def test_a_given_key_an_address_or_open_apis():
    args = network_args("0.0.0.0", admin_key="s3cret")
    assert "--http-address=0.0.0.0" in args
    assert f"--http-restricted-api=model-repository,shared-memory,trace,logging:{ADMIN_HEADER}=s3cret" in args
    assert network_args(open_admin_apis=True) == ["--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
                                                  "--metrics-address=127.0.0.1"]
    assert admin_headers("k", "grpc") == {GRPC_ADMIN_HEADER: "k"} and admin_headers("k") == {ADMIN_HEADER: "k"}


@pytest.mark.parametrize("kwargs, field", [({"host": ""}, "host"), ({"host": "a b"}, "host"),
                                            ({"admin_key": "has space"}, "admin_key"),
                                            ({"admin_key": "a:b=c"}, "admin_key"), ({"admin_key": ""}, "admin_key")])
def test_bad_settings_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"^{field}:"):
        network_args(**kwargs)


def test_serve_cli_refuses_a_bad_key(capsys):
    assert tritonserver._main(["serve", "--admin-key", "a b"]) == 2
    assert "admin_key:" in capsys.readouterr().err
