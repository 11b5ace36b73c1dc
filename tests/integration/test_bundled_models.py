"""The model repository as `make serve` ships it: the LLaDA-architecture model (`dllm`) and the
block-diffusion model (`dllm-sdar`, SDAR architecture) load in one server, and the block-diffusion
model answers the task formats over HTTP and gRPC, the same as the in-process engine, whatever
`max_tokens` leaves room for."""

from __future__ import annotations

import json

import pytest

from backend.engine.config import REPO_ROOT, EngineConfig
from backend.engine.engine import Engine
from backend.training import tasks
from tests.integration.calls import grpc_generate, http_post, metric, scrape_metrics, wait_for
from tests.integration.server import start_server
from tests.integration.test_readme_examples import bash, cli_examples

BLOCK_MODEL = "dllm-sdar"
CHECKPOINT = REPO_ROOT / "model_repository" / BLOCK_MODEL / "1" / "default-model"
EXAMPLES = tasks.held_out_set(4, seed=tasks.EVAL_SEED)  # 4 held-out prompts of each of the five tasks


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_server(tmp_path_factory.mktemp("log") / "server.log", model=["dllm", BLOCK_MODEL])
    yield s
    s.stop()


@pytest.fixture(scope="module")
def engine():
    return Engine.from_config(EngineConfig(model=str(CHECKPOINT), dtype="float32", device="cpu"))


def http_text(server, model: str, prompt: str, sampling: dict) -> str:
    status, body = http_post(server.http_url, f"/v2/models/{model}/generate",
                             {"text_input": prompt, "exclude_input_in_output": True,
                              "sampling_parameters": json.dumps(sampling)})
    assert status == 200, body
    return json.loads(body)["text_output"]


def test_block_model_is_a_block_diffusion_checkpoint():
    config = json.loads((CHECKPOINT / "config.json").read_text())
    assert config["architectures"] == ["SDARForCausalLM"] and config["block_size"] == 8


def test_block_model_answers_the_tasks_as_the_engine_does(server, engine):
    expected = engine.generate([engine.tokenizer.encode(ex.prompt) for ex in EXAMPLES],
                               [engine.make_params({"max_tokens": 32}) for _ in EXAMPLES])
    right = 0
    for ex, want in zip(EXAMPLES, expected, strict=True):
        got = http_text(server, BLOCK_MODEL, ex.prompt, {"max_tokens": 32})
        assert got == want.text, ex.prompt
        right += got == ex.answer
    # A trained model (random weights answer none): its held-out accuracy is ~90% (README).
    assert right >= 0.7 * len(EXAMPLES), f"{right}/{len(EXAMPLES)} right"


@pytest.mark.parametrize("max_tokens", [16, 64, 256])
def test_block_model_answers_do_not_depend_on_max_tokens(server, max_tokens):
    for ex in EXAMPLES[::4]:
        short = http_text(server, BLOCK_MODEL, ex.prompt, {"max_tokens": 16})
        assert http_text(server, BLOCK_MODEL, ex.prompt, {"max_tokens": max_tokens}) == short


def test_both_models_stream_over_grpc(server, engine):
    prompt = "reverse hello ="
    [block_answer] = engine.generate([engine.tokenizer.encode(prompt)], [engine.make_params({"max_tokens": 32})])
    for model, want in (("dllm", "olleh"), (BLOCK_MODEL, block_answer.text)):
        res = grpc_generate(server.grpc_url, prompt, {"max_tokens": 32}, model=model, exclude_input_in_output=True)
        assert res.error is None and res.text == want and res.finish_reason == "stop", (model, res)
    wait_for(lambda: all(metric(scrape_metrics(server.metrics_port), "dllm:requests_total", model=m) >= 1
                         for m in ("dllm", BLOCK_MODEL)), 10, "a request counted under each model")


def test_readme_example_of_the_block_model_answers_as_written(server):
    examples = cli_examples(BLOCK_MODEL)
    assert examples, "README: no `client generate --model dllm-sdar` example"
    for line, answer in examples:
        run = bash(f"{line} --url {server.grpc_url}")
        assert run.returncode == 0 and run.stdout == answer + "\n", (line, run.stdout, run.stderr)
