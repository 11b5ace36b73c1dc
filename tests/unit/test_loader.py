"""Checkpoints on disk with the real LLaDA / Dream names: round trips and errors that name the tensor."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from backend.models import PackedBatch, random_model
from backend.models.loader import CheckpointError, load_model, read_config, save_checkpoint

LLADA_NAMES = ["model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight",
               "model.transformer.blocks.1.attn_norm.weight", "model.transformer.blocks.1.ff_norm.weight",
               "model.transformer.blocks.1.q_proj.weight", "model.transformer.blocks.1.k_proj.weight",
               "model.transformer.blocks.1.v_proj.weight", "model.transformer.blocks.1.attn_out.weight",
               "model.transformer.blocks.1.ff_proj.weight", "model.transformer.blocks.1.up_proj.weight",
               "model.transformer.blocks.1.ff_out.weight"]
DREAM_NAMES = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
               "model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.q_proj.bias",
               "model.layers.1.self_attn.k_proj.bias", "model.layers.1.self_attn.o_proj.weight",
               "model.layers.1.mlp.gate_proj.weight", "model.layers.1.mlp.up_proj.weight",
               "model.layers.1.mlp.down_proj.weight", "model.layers.1.input_layernorm.weight",
               "model.layers.1.post_attention_layernorm.weight"]


def _names(path):
    names = set()
    for f in path.glob("*.safetensors"):
        with safe_open(f, framework="pt") as h:
            names |= set(h.keys())
    return names


@pytest.mark.parametrize("shard", [None, 20_000])
def test_round_trip_equals_constructed_model(tmp_path, tiny_name, shard):
    model = random_model(tiny_name, dtype=torch.float64, seed=5)
    save_checkpoint(model, tmp_path, max_shard_bytes=shard)
    if shard:
        assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
        assert (tmp_path / "model.safetensors.index.json").is_file()
    expected = LLADA_NAMES if model.config.arch == "llada" else DREAM_NAMES
    assert set(expected) <= _names(tmp_path)
    loaded = load_model(tmp_path, dtype=torch.float64)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ids = torch.arange(1, 12)
    batch = PackedBatch.contiguous([11])
    assert torch.equal(model(ids, batch), loaded(ids, batch))


def test_dtype_defaults_to_float32_on_cpu(tmp_path):
    save_checkpoint(random_model("tiny-llada", dtype=torch.float64), tmp_path)
    assert load_model(tmp_path).dtype == torch.float32
    assert load_model(tmp_path, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_llada_config_keys(tmp_path):
    save_checkpoint(random_model("tiny-llada"), tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    for key in ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size", "rope_theta",
                "rms_norm_eps", "mask_token_id", "max_sequence_length"):
        assert key in hf, key
    assert read_config(tmp_path).arch == "llada"


def test_fused_llada_att_proj_loads_like_split(tmp_path):
    model = random_model("tiny-llada", dtype=torch.float64, seed=7)
    save_checkpoint(model, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    for i in range(model.config.num_layers):
        b = f"model.transformer.blocks.{i}."
        tensors[b + "att_proj.weight"] = torch.cat([tensors.pop(b + f"{x}_proj.weight") for x in "qkv"])
    save_file(tensors, tmp_path / "model.safetensors")
    loaded = load_model(tmp_path, dtype=torch.float64)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


def _edit(tmp_path, fn):
    save_checkpoint(random_model("tiny-dream", dtype=torch.float32), tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    fn(tensors)
    save_file(tensors, tmp_path / "model.safetensors")


def test_missing_tensor_is_named(tmp_path):
    _edit(tmp_path, lambda t: t.pop("model.layers.1.self_attn.k_proj.bias"))
    with pytest.raises(CheckpointError, match=r"missing tensor model\.layers\.1\.self_attn\.k_proj\.bias"):
        load_model(tmp_path)


def test_unexpected_tensor_is_named(tmp_path):
    _edit(tmp_path, lambda t: t.__setitem__("model.layers.9.extra.weight", torch.zeros(2)))
    with pytest.raises(CheckpointError, match=r"unexpected tensor model\.layers\.9\.extra\.weight"):
        load_model(tmp_path)


def test_misshaped_tensor_is_named(tmp_path):
    _edit(tmp_path, lambda t: t.__setitem__("model.layers.0.mlp.up_proj.weight", torch.zeros(3, 3)))
    with pytest.raises(CheckpointError, match=r"tensor model\.layers\.0\.mlp\.up_proj\.weight: shape \(3, 3\)"):
        load_model(tmp_path)


def test_rotary_buffers_are_ignored(tmp_path):
    _edit(tmp_path, lambda t: t.__setitem__("model.layers.0.self_attn.rotary_emb.inv_freq", torch.zeros(8)))
    load_model(tmp_path)


def test_bad_directories(tmp_path):
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path)
    # Absent keys take the official defaults: activation_type 'swiglu', which the llama block refuses.
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llada", "d_model": 64}))
    with pytest.raises(CheckpointError, match="config.json: activation_type 'swiglu' is not supported"):
        load_model(tmp_path)
    save_checkpoint(random_model("tiny-llada"), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_model(tmp_path)


def test_missing_shard_is_named(tmp_path):
    save_checkpoint(random_model("tiny-llada"), tmp_path, max_shard_bytes=20_000)
    victim = sorted(tmp_path.glob("model-*.safetensors"))[-1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        load_model(tmp_path)
