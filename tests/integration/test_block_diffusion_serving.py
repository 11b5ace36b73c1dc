"""A block-diffusion model (SDAR architecture, random tiny weights, the bundled tokenizer) served
through tritonserver: streamed and non-streamed answers equal the in-process engine's, its own
parameters are accepted and the other families' refused by name, and the K/V pages come back."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from backend.engine.config import DEFAULT_MODEL, REPO_ROOT, EngineConfig
from backend.engine.engine import Engine
from backend.models import random_model
from backend.models.loader import save_checkpoint
from backend.models.model_config import ModelConfig
from tests.integration.calls import grpc_generate, metric, scrape_metrics, wait_for
from tests.integration.server import start_server

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
SAMPLING = {"max_tokens": 12, "ignore_eos": True, "remasking": "low_confidence_static", "denoising_steps": 2}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny SDAR checkpoint whose vocabulary is the bundled character tokenizer's."""
    default = json.loads((REPO_ROOT / DEFAULT_MODEL / "config.json").read_text())
    cfg = ModelConfig(arch="sdar", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=2, explicit_head_dim=8,
                      intermediate_size=64, vocab_size=default["vocab_size"], max_sequence_length=256, qk_norm=True,
                      block_size=4, mask_token_id=default["mask_token_id"], eos_token_id=default["eos_token_id"])
    path = tmp_path_factory.mktemp("sdar")
    save_checkpoint(random_model(cfg, torch.float32, seed=3), path)
    for f in TOKENIZER_FILES:
        shutil.copy(REPO_ROOT / DEFAULT_MODEL / f, path / f)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, checkpoint):
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO_ROOT / "model_repository" / "dllm", repo / "dllm",
                    ignore=shutil.ignore_patterns("default-model", "engine.json"))
    (repo / "dllm" / "1" / "engine.json").write_text(json.dumps({"model": str(checkpoint), "dtype": "float32"}))
    s = start_server(tmp_path_factory.mktemp("log") / "server.log", repo)
    yield s
    s.stop()


def test_answers_equal_the_engine_in_process(server, checkpoint):
    engine = Engine.from_config(EngineConfig(model=str(checkpoint), dtype="float32", device="cpu"))
    prompt = "1234+4321="
    expected = engine.generate([engine.tokenizer.encode(prompt)], [engine.make_params(SAMPLING)])[0].text
    streamed = grpc_generate(server.grpc_url, prompt, SAMPLING)
    assert streamed.error is None and streamed.text == expected and streamed.finish_reason == "length"
    once = grpc_generate(server.grpc_url, prompt, SAMPLING, stream=False, exclude_input_in_output=True)
    assert once.text == expected


@pytest.mark.parametrize("key, value", [("alg", "origin"), ("steps", 4), ("sparse_retention", 0.5),
                                        ("sub_block_length", 2)])
def test_other_families_settings_are_refused_by_name(server, key, value):
    res = grpc_generate(server.grpc_url, "12+3=", {**SAMPLING, key: value})
    assert res.error is not None and key in res.error


def test_pages_come_back(server):
    grpc_generate(server.grpc_url, "9+9=", SAMPLING)
    wait_for(lambda: metric(scrape_metrics(server.metrics_port), "dllm:kv_pages_used") == 0, 10, "pages freed")
