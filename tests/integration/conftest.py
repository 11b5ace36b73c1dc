"""One real tritonserver per test session, serving the real model repository (the bundled model),
in explicit model-control mode so that a test can unload and reload the model. If the server cannot
start, every test here fails with the server log's tail: a missing server is a failure, not a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.serving.tritonserver import DEFAULT_MODEL_REPOSITORY
from tests.integration.server import start_server

# Another repository (for example one whose engine.json names a real checkpoint) can be tested with
# DLLM_MODEL_REPOSITORY=/path make test; its dllm/1 settings must not depend on config.pbtxt parameters.
MODEL_REPOSITORY = Path(os.environ.get("DLLM_MODEL_REPOSITORY", DEFAULT_MODEL_REPOSITORY))


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("tritonserver") / "server.log", MODEL_REPOSITORY)
    yield srv
    code = srv.stop()
    assert code == 0, f"tritonserver exited with {code}; log tail:\n" + "\n".join(srv.log().splitlines()[-30:])


@pytest.fixture(scope="session")
def reference_engine():
    """The in-process engine on the same checkpoint: what the server must answer (greedy)."""
    import torch

    from backend.engine import Engine
    from backend.engine_config import EngineConfig
    from backend.serving.settings import load_settings

    torch.set_num_threads(1)  # the server needs the cores more
    settings = load_settings(MODEL_REPOSITORY / "dllm" / "1", {})
    return Engine.from_config(EngineConfig.from_dict({**settings.engine, "device": "cpu",
                                                      "kv_cache_bytes": 32 << 20}))


@pytest.fixture(scope="session")
def expected(reference_engine):
    """expected(prompt, **sampling) -> the text the in-process engine generates."""
    cache = {}

    def run(prompt: str, **sampling) -> str:
        key = (prompt, tuple(sorted(sampling.items())))
        if key not in cache:
            eng = reference_engine
            ids = eng.tokenizer.encode(prompt)
            cache[key] = eng.generate([ids], eng.make_params(sampling))[0].text
        return cache[key]

    return run
