"""A model whose settings are wrong fails to load with a message naming the cause; the server and
the good model are unaffected."""

from __future__ import annotations

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.calls import grpc_generate

CAUSES = {
    "dllm_missing_checkpoint": "/nonexistent/checkpoint",
    "dllm_bad_setting": "max_num_seqs: must be >= 1",
    "dllm_unknown_setting": "max_num_sequences: unknown engine setting",
}


@pytest.mark.parametrize("model", sorted(CAUSES))
def test_bad_settings_fail_the_load_naming_the_cause(server, model):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException) as e:
            client.load_model(model, headers=server.admin())
        assert CAUSES[model] in e.value.message(), e.value.message()
        assert not client.is_model_ready(model)
        assert client.is_model_ready("dllm")
    finally:
        client.close()
    assert grpc_generate(server.grpc_url, "1+1=", {"max_tokens": 8}).error is None
