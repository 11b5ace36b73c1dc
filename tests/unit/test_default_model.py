"""The shipped default model: loads through the standard loader and tokenizer, answers held-out prompts.

A broken checkpoint, loader, tokenizer or reference decoder fails here. The prompts come from the
fixed held-out set (never seen in training) and the answers are checked exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from backend.engine.sampling_params import SamplingParams
from backend.models.loader import load_model
from backend.models.tokenizer import Tokenizer
from backend.oracle import reference
from backend.oracle.evaluate import default_params
from backend.training import tasks

MODEL_DIR = Path(__file__).resolve().parents[2] / "model_repository" / "dllm" / "1" / "default-model"
# Which held-out examples to decode: the first PER_TASK of every task (a few seconds on a CPU).
PER_TASK = 4


@pytest.fixture(scope="module")
def shipped():
    return load_model(MODEL_DIR, dtype=torch.float32), Tokenizer(MODEL_DIR)


def test_files_are_llada_format_and_small():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "generation_config.json", "README.md"):
        assert (MODEL_DIR / name).is_file(), name
    hf = json.loads((MODEL_DIR / "config.json").read_text())
    assert hf["model_type"] == "llada" and "d_model" in hf
    with safe_open(MODEL_DIR / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
    assert "model.transformer.wte.weight" in names and "model.transformer.blocks.0.q_proj.weight" in names
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 15_000_000


def test_config_matches_tokenizer(shipped):
    model, tok = shipped
    cfg = model.config
    assert cfg.vocab_size == tok.vocab_size
    assert cfg.mask_token_id == tok.mask_token_id and cfg.eos_token_id == tok.eos_token_id
    longest = max(len(tok.encode(e.prompt)) for e in tasks.held_out_set(20))
    assert longest + default_params(MODEL_DIR)["max_tokens"] <= cfg.max_sequence_length


def test_answers_held_out_prompts_exactly(shipped):
    model, tok = shipped
    params = SamplingParams.from_dict({}, defaults=default_params(MODEL_DIR))
    wrong = []
    for ex in tasks.held_out_set(PER_TASK):
        out = reference.generate(model, tok.encode(ex.prompt), params, tok.stop_token_ids)
        got = tok.decode(out.tokens)
        if got != ex.answer or out.finish_reason != "eos":
            wrong.append((ex.prompt[-40:], ex.answer, got, out.finish_reason))
    assert not wrong
