"""One real tritonserver per test session, serving the real model repository (the bundled model),
in explicit model-control mode so that a test can unload and reload the model. If the server cannot
start, every test here fails with the server log's tail: a missing server is a failure, not a skip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from backend.server.tritonserver import DEFAULT_MODEL_REPOSITORY
from tests.integration.server import start_server

# Another repository (for example one whose engine.json names a real checkpoint) can be tested with
# DLLM_MODEL_REPOSITORY=/path make test; its dllm/1 settings must not depend on config.pbtxt parameters.
MODEL_REPOSITORY = Path(os.environ.get("DLLM_MODEL_REPOSITORY", DEFAULT_MODEL_REPOSITORY))


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.integration)


# Models that must fail to load, each for a reason the load error must name; they live in a second
# repository and are loaded only by test_load_failures.py.
BROKEN_MODELS = {
    "dllm_missing_checkpoint": ({"model": "/nonexistent/checkpoint"}, {}),
    "dllm_bad_setting": ({}, {"max_num_seqs": "0"}),
    "dllm_unknown_setting": ({"max_num_sequences": 8}, {}),
}


def write_broken_models(root: Path) -> Path:
    config = (MODEL_REPOSITORY / "dllm" / "config.pbtxt").read_text()
    model_py = (MODEL_REPOSITORY / "dllm" / "1" / "model.py").read_text()
    for name, (engine_json, params) in BROKEN_MODELS.items():
        (root / name / "1").mkdir(parents=True)
        extra = "".join(f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}\n' for k, v in params.items())
        (root / name / "config.pbtxt").write_text(config + extra)
        (root / name / "1" / "model.py").write_text(model_py)
        if engine_json:
            (root / name / "1" / "engine.json").write_text(json.dumps(engine_json))
    return root


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    broken = write_broken_models(tmp_path_factory.mktemp("broken_models"))
    srv = start_server(tmp_path_factory.mktemp("tritonserver") / "server.log", MODEL_REPOSITORY,
                       extra=[f"--model-repository={broken}"])
    yield srv
    code = srv.stop_cleanly()
    assert code == 0, f"tritonserver exited with {code}; log tail:\n" + "\n".join(srv.log().splitlines()[-30:])


@pytest.fixture(scope="session")
def reference_engine():
    """The in-process engine on the same checkpoint: what the server must answer (greedy)."""
    import torch

    from backend.engine.config import EngineConfig
    from backend.engine.engine import Engine
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
        key = (prompt, json.dumps(sampling, sort_keys=True))  # values may be lists (stop)
        if key not in cache:
            eng = reference_engine
            ids = eng.tokenizer.encode(prompt)
            cache[key] = eng.generate([ids], eng.make_params(sampling))[0].text
        return cache[key]

    return run


@pytest.fixture(scope="session")
def openai_pair(tmp_path_factory):
    """`make serve-openai`'s two processes (tests/integration/openai_pair.py), shared by the test_openai_*
    modules; at the end a SIGINT (Ctrl-C) must stop both and the launcher exit 0."""
    from tests.integration.openai_pair import start_pair

    pair = start_pair(tmp_path_factory.mktemp("serve_openai") / "serve-openai.log")
    yield pair
    code = pair.stop()
    assert code == 0, f"serve-openai exited with {code}; log tail:\n" + "\n".join(pair.log().splitlines()[-30:])
