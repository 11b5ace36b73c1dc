"""SDAR and Fast-dLLM v2 from checkpoints in the official layout: names, config fields (honoured,
refused by name), and the block-causal forward against an independent float64 computation."""

from __future__ import annotations

import pytest
import torch

from backend.models import random_model
from backend.models.block_causal import block_causal_logits
from backend.models.loader import CheckpointError, detect_arch, load_model, read_config, save_checkpoint
from tests.unit.block_checkpoints import FAST_DLLM_CONFIG, SDAR_CONFIG, reference_logits, write

CONFIGS = {"sdar": SDAR_CONFIG, "fast_dllm": FAST_DLLM_CONFIG}


@pytest.mark.parametrize("arch", ["sdar", "fast_dllm"])
@pytest.mark.parametrize("block", [None, 1, 3])
def test_block_causal_logits_equal_independent_reference(tmp_path, arch, block):
    hf = CONFIGS[arch]
    tensors = write(tmp_path, hf, seed=3)
    model = load_model(tmp_path, dtype=torch.float64)
    cfg = model.config
    assert cfg.arch == arch and cfg.block_causal
    assert cfg.block_size == hf.get("block_size", hf.get("bd_size"))
    block = block or cfg.block_size
    ids = torch.randint(0, hf["vocab_size"], (19,), generator=torch.Generator().manual_seed(1))
    ours = block_causal_logits(model, ids, block)
    ref = reference_logits(hf, tensors, ids.tolist(), block)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("arch", ["sdar", "fast_dllm"])
def test_block_causal_means_no_look_ahead(arch):
    """Changing a token changes no logit of an earlier block, and does change its own block's."""
    model = random_model(f"tiny-{arch.replace('_', '-')}", torch.float64, seed=2)
    b = model.config.block_size
    ids = torch.randint(0, 90, (3 * b,), generator=torch.Generator().manual_seed(0))
    base = block_causal_logits(model, ids, b)
    changed = ids.clone()
    changed[b + 1] = (changed[b + 1] + 1) % 90
    other = block_causal_logits(model, changed, b)
    shift = model.config.logit_shift
    assert torch.equal(base[:b + shift], other[:b + shift])
    assert not torch.allclose(base[b + shift:2 * b], other[b + shift:2 * b])


def test_config_values_are_read(tmp_path):
    write(tmp_path / "s", SDAR_CONFIG, attention_bias=True)
    cfg = read_config(tmp_path / "s")
    assert (cfg.head_dim, cfg.num_kv_heads, cfg.qk_norm, cfg.attention_bias, cfg.qkv_bias) == (16, 2, True, True, True)
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.logit_shift, cfg.rope_theta) == (95, 90, 0, 1e6)
    load_model(tmp_path / "s", dtype=torch.float64)  # o_proj.bias is expected and present
    write(tmp_path / "f", FAST_DLLM_CONFIG, eos_token_id=[81, 80])
    cfg = read_config(tmp_path / "f")
    assert (cfg.block_size, cfg.logit_shift, cfg.tie_word_embeddings, cfg.mask_token_id) == (8, 1, True, 83)
    assert (cfg.eos_token_id, cfg.extra_stop_token_ids) == (81, [80])


@pytest.mark.parametrize("arch, key, value", [
    ("sdar", "use_sliding_window", True),
    ("sdar", "rope_scaling", {"rope_type": "yarn", "factor": 4.0}),
    ("sdar", "hidden_act", "gelu_pytorch_tanh"),
    ("fast_dllm", "layer_types", ["full_attention", "sliding_attention"]),
    ("fast_dllm", "use_sliding_window", True),
])
def test_unsupported_fields_are_refused_by_name(tmp_path, arch, key, value):
    write(tmp_path, CONFIGS[arch], **{key: value})
    with pytest.raises(CheckpointError, match=key):
        read_config(tmp_path)


def test_missing_official_tensor_is_named(tmp_path):
    tensors = write(tmp_path, SDAR_CONFIG)
    from safetensors.torch import save_file

    del tensors["model.layers.1.self_attn.k_norm.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"model\.layers\.1\.self_attn\.k_norm\.weight"):
        load_model(tmp_path, dtype=torch.float64)


@pytest.mark.parametrize("name", ["tiny-sdar", "tiny-fast-dllm"])
def test_save_load_round_trip(tmp_path, name):
    model = random_model(name, torch.float64, seed=4)
    save_checkpoint(model, tmp_path)
    assert detect_arch(__import__("json").loads((tmp_path / "config.json").read_text())) == model.config.arch
    loaded = load_model(tmp_path, dtype=torch.float64)
    assert loaded.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


@pytest.mark.parametrize("arch, changes", [
    ("sdar", {"rope_theta": 500.0}), ("sdar", {"rms_norm_eps": 1e-3}), ("sdar", {"num_key_value_heads": 4}),
    ("sdar", {"head_dim": 8}), ("sdar", {"attention_bias": True}), ("sdar", {"tie_word_embeddings": True}),
    ("sdar", {"hidden_act": "swish"}), ("fast_dllm", {"tie_word_embeddings": False}),
    ("fast_dllm", {"num_key_value_heads": 1}), ("fast_dllm", {"rope_theta": 10000.0}),
    ("fast_dllm", {"rope_scaling": {"rope_type": "default"}}),
])
def test_honoured_fields_change_the_logits_as_the_reference_does(tmp_path, arch, changes):
    hf = {**CONFIGS[arch], **changes}
    tensors = write(tmp_path, hf, seed=6)
    model = load_model(tmp_path, dtype=torch.float64)
    ids = torch.randint(0, hf["vocab_size"], (11,), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(block_causal_logits(model, ids, 4), reference_logits(hf, tensors, ids.tolist(), 4),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("arch", ["sdar", "fast_dllm"])
def test_every_key_of_the_released_config_is_tabled(tmp_path, arch, caplog):
    """Keys outside the tables are logged by name; the released configs' keys are all known."""
    write(tmp_path, CONFIGS[arch])
    with caplog.at_level("WARNING"):
        read_config(tmp_path)
    assert "not in the official config class" not in caplog.text
    write(tmp_path, CONFIGS[arch], brand_new_key=1)
    with caplog.at_level("WARNING"):
        read_config(tmp_path)
    assert "brand_new_key" in caplog.text
