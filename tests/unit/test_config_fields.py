"""Every field of the official LLaDA and Dream config classes: honoured (logits of the loaded model equal
a direct computation with that value) or refused at load by name. Absent keys take the official
defaults; Dream's context is its max_position_embeddings."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from backend.models import PackedBatch
from backend.models.loader import CheckpointError, load_model, read_config
from backend.models.model_config import preset
from tests.unit.config_reference import reference_logits, write_checkpoint

# The official classes' fields, written out from LLaDA-8B-Instruct's configuration_llada.py
# (ModelConfig, plus LLaDAConfig's use_cache) and Dream-v0-Instruct-7B's configuration_dream.py
# (DreamConfig.__init__; eos/bos ids come through PretrainedConfig).
LLADA_OFFICIAL = [
    "d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_ratio", "mlp_hidden_size", "activation_type",
    "block_type", "block_group_size", "alibi", "alibi_bias_max", "rope", "rope_full_precision",
    "flash_attention", "attention_dropout", "multi_query_attention", "attention_layer_norm",
    "residual_dropout", "embedding_dropout", "input_emb_norm", "layer_norm_type", "layer_norm_with_affine",
    "rms_norm_eps", "attention_layer_norm_with_affine", "max_sequence_length", "rope_theta",
    "include_qkv_bias", "include_bias", "bias_for_layer_norm", "scale_logits", "vocab_size",
    "embedding_size", "weight_tying", "eos_token_id", "pad_token_id", "mask_token_id", "init_device",
    "init_fn", "init_std", "init_cutoff_factor", "precision", "use_cache"]
DREAM_OFFICIAL = [
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "use_cache", "tie_word_embeddings", "rope_theta", "rope_scaling", "use_sliding_window", "sliding_window",
    "max_window_layers", "attention_dropout", "mask_token_id", "pad_token_id"]

BASE = {
    "llada": {"model_type": "llada", "d_model": 32, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2,
              "mlp_hidden_size": 48, "activation_type": "silu", "block_type": "llama", "rope": True,
              "layer_norm_type": "rms", "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_sequence_length": 64,
              "vocab_size": 40, "embedding_size": 40, "weight_tying": False, "include_qkv_bias": False,
              "eos_token_id": 37, "pad_token_id": 38, "mask_token_id": 39},
    "dream": {"model_type": "Dream", "hidden_size": 32, "num_attention_heads": 4, "num_key_value_heads": 2,
              "num_hidden_layers": 2, "intermediate_size": 48, "vocab_size": 40, "hidden_act": "silu",
              "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
              "tie_word_embeddings": False, "eos_token_id": 37, "pad_token_id": 38, "mask_token_id": 39},
}

# (family, field, changes to the base config, outcome): "changes" = honoured, logits differ from the
# base model's; "same" = honoured with an equivalent value, or ignored: logits equal the base model's;
# "refused" = load fails naming the field. Both honoured outcomes are also checked against the direct
# computation.
CASES = [
    ("llada", "d_model", {"d_model": 48}, "changes"),
    ("llada", "n_heads", {"n_heads": 8}, "changes"),
    ("llada", "n_kv_heads", {"n_kv_heads": 2}, "changes"),
    ("llada", "n_kv_heads", {"n_kv_heads": None}, "same"),
    ("llada", "n_layers", {"n_layers": 3}, "changes"),
    ("llada", "mlp_ratio", {"mlp_hidden_size": None, "mlp_ratio": 3}, "changes"),
    ("llada", "mlp_hidden_size", {"mlp_hidden_size": 64}, "changes"),
    ("llada", "activation_type", {"activation_type": "gelu"}, "changes"),
    ("llada", "activation_type", {"activation_type": "relu"}, "changes"),
    ("llada", "activation_type", {"activation_type": "swiglu"}, "refused"),
    ("llada", "block_type", {"block_type": "sequential"}, "refused"),
    ("llada", "block_type", {"block_type": "parallel"}, "refused"),
    ("llada", "block_group_size", {"block_group_size": 2}, "refused"),
    ("llada", "alibi", {"alibi": True}, "refused"),
    ("llada", "alibi_bias_max", {"alibi_bias_max": 4.0}, "same"),
    ("llada", "rope", {"rope": False}, "refused"),
    ("llada", "rope_full_precision", {"rope_full_precision": False}, "refused"),
    ("llada", "flash_attention", {"flash_attention": True}, "same"),
    ("llada", "attention_dropout", {"attention_dropout": 0.5}, "same"),
    ("llada", "multi_query_attention", {"n_kv_heads": None, "multi_query_attention": True}, "changes"),
    ("llada", "multi_query_attention", {"n_kv_heads": None, "multi_query_attention": False}, "same"),
    ("llada", "multi_query_attention", {"multi_query_attention": True}, "refused"),  # n_kv_heads 4 contradicts
    ("llada", "attention_layer_norm", {"attention_layer_norm": True}, "refused"),
    ("llada", "residual_dropout", {"residual_dropout": 0.5}, "same"),
    ("llada", "embedding_dropout", {"embedding_dropout": 0.5}, "same"),
    ("llada", "input_emb_norm", {"input_emb_norm": True}, "changes"),
    ("llada", "layer_norm_type", {"layer_norm_type": "gemma_rms"}, "changes"),
    ("llada", "layer_norm_type", {"layer_norm_type": "default"}, "refused"),
    ("llada", "layer_norm_type", {"layer_norm_type": "low_precision"}, "refused"),
    ("llada", "layer_norm_type", {"layer_norm_type": "amd_compatible"}, "refused"),
    ("llada", "layer_norm_with_affine", {"layer_norm_with_affine": False}, "refused"),
    ("llada", "rms_norm_eps", {"rms_norm_eps": 0.5}, "changes"),
    ("llada", "attention_layer_norm_with_affine", {"attention_layer_norm_with_affine": False}, "same"),
    ("llada", "max_sequence_length", {"max_sequence_length": 128}, "same"),
    ("llada", "rope_theta", {"rope_theta": 7.0}, "changes"),
    ("llada", "include_qkv_bias", {"include_qkv_bias": True}, "changes"),
    ("llada", "include_bias", {"include_bias": True}, "refused"),
    ("llada", "bias_for_layer_norm", {"bias_for_layer_norm": True}, "refused"),
    ("llada", "bias_for_layer_norm", {"bias_for_layer_norm": False}, "same"),
    ("llada", "scale_logits", {"scale_logits": True}, "changes"),
    ("llada", "vocab_size", {"vocab_size": 36}, "same"),  # the embedding rows are embedding_size
    ("llada", "vocab_size", {"vocab_size": 44, "embedding_size": None}, "changes"),
    ("llada", "embedding_size", {"embedding_size": 48}, "changes"),
    ("llada", "embedding_size", {"embedding_size": 32}, "refused"),  # smaller than vocab_size
    ("llada", "weight_tying", {"weight_tying": True}, "changes"),
    ("llada", "eos_token_id", {"eos_token_id": 30}, "same"),
    ("llada", "pad_token_id", {"pad_token_id": 31}, "same"),
    ("llada", "mask_token_id", {"mask_token_id": 32}, "same"),
    ("llada", "init_device", {"init_device": "meta"}, "same"),
    ("llada", "init_fn", {"init_fn": "mitchell"}, "same"),
    ("llada", "init_std", {"init_std": 0.5}, "same"),
    ("llada", "init_cutoff_factor", {"init_cutoff_factor": 3.0}, "same"),
    ("llada", "precision", {"precision": "amp_bf16"}, "same"),
    ("llada", "use_cache", {"use_cache": True}, "same"),
    ("dream", "vocab_size", {"vocab_size": 48}, "changes"),
    ("dream", "hidden_size", {"hidden_size": 48}, "changes"),
    ("dream", "intermediate_size", {"intermediate_size": 64}, "changes"),
    ("dream", "num_hidden_layers", {"num_hidden_layers": 3}, "changes"),
    ("dream", "num_attention_heads", {"num_attention_heads": 8}, "changes"),
    ("dream", "num_key_value_heads", {"num_key_value_heads": 4}, "changes"),
    ("dream", "num_key_value_heads", {"num_key_value_heads": None}, "changes"),  # None: one per query head
    ("dream", "hidden_act", {"hidden_act": "gelu"}, "changes"),
    ("dream", "hidden_act", {"hidden_act": "relu"}, "changes"),
    ("dream", "hidden_act", {"hidden_act": "swish"}, "same"),
    ("dream", "hidden_act", {"hidden_act": "gelu_new"}, "refused"),
    ("dream", "max_position_embeddings", {"max_position_embeddings": 131072}, "same"),
    ("dream", "initializer_range", {"initializer_range": 0.5}, "same"),
    ("dream", "rms_norm_eps", {"rms_norm_eps": 0.5}, "changes"),
    ("dream", "use_cache", {"use_cache": True}, "same"),
    ("dream", "tie_word_embeddings", {"tie_word_embeddings": True}, "changes"),
    ("dream", "rope_theta", {"rope_theta": 7.0}, "changes"),
    ("dream", "rope_scaling", {"rope_scaling": {"rope_type": "default"}}, "same"),
    ("dream", "rope_scaling", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "refused"),
    ("dream", "use_sliding_window", {"use_sliding_window": True}, "refused"),
    ("dream", "sliding_window", {"sliding_window": 4}, "same"),
    ("dream", "max_window_layers", {"max_window_layers": 1}, "same"),
    ("dream", "attention_dropout", {"attention_dropout": 0.5}, "same"),
    ("dream", "mask_token_id", {"mask_token_id": 32}, "same"),
    ("dream", "pad_token_id", {"pad_token_id": 31}, "same"),
    ("dream", "eos_token_id", {"eos_token_id": 30}, "same"),
    ("dream", "bos_token_id", {"bos_token_id": 30}, "same"),
]
# Config fields that are ours to read but do not reach the logits: checked on the config instead.
CONFIG_VALUE = {"eos_token_id": "eos_token_id", "pad_token_id": "pad_token_id", "mask_token_id": "mask_token_id",
                "max_sequence_length": "max_sequence_length", "max_position_embeddings": "max_sequence_length"}
IDS = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8])


def _logits(path):
    model = load_model(path, dtype=torch.float64)
    return model.lm_head(model(IDS, PackedBatch.contiguous([len(IDS)])))


def _same(a, b) -> bool:
    return a.shape == b.shape and (a - b).abs().max().item() < 1e-9


@pytest.mark.parametrize("family,official", [("llada", LLADA_OFFICIAL), ("dream", DREAM_OFFICIAL)])
def test_every_official_field_has_a_case(family, official):
    covered = {field for fam, field, _, _ in CASES if fam == family}
    assert not set(official) - covered, f"{family} fields without a case: {sorted(set(official) - covered)}"


@pytest.mark.parametrize("family,field,changes,outcome", CASES,
                         ids=[f"{c[0]}-{c[1]}-{json.dumps(c[2])}" for c in CASES])
def test_field_is_honoured_or_refused(tmp_path, family, field, changes, outcome):
    hf = {**BASE[family], **changes}
    if outcome == "refused":
        write_checkpoint(tmp_path, family, BASE[family])
        (tmp_path / "config.json").write_text(json.dumps(hf))
        with pytest.raises(CheckpointError, match=rf"config\.json: {field} "):
            load_model(tmp_path, dtype=torch.float64)
        return
    tensors = write_checkpoint(tmp_path / "case", family, hf)
    got = _logits(tmp_path / "case")
    assert _same(got, reference_logits(family, hf, tensors, IDS)), f"{field}: logits differ from the direct computation"
    write_checkpoint(tmp_path / "base", family, BASE[family])
    assert _same(got, _logits(tmp_path / "base")) == (outcome == "same")
    if field in CONFIG_VALUE:
        assert getattr(read_config(tmp_path / "case"), CONFIG_VALUE[field]) == changes[field]


@pytest.mark.parametrize("family,key,attr,official", [
    ("llada", "weight_tying", "tie_word_embeddings", True),
    ("llada", "rope_theta", "rope_theta", 10000.0),
    ("llada", "max_sequence_length", "max_sequence_length", 1024),
    ("llada", "rms_norm_eps", "rms_norm_eps", 1e-5),
    ("dream", "rope_theta", "rope_theta", 10000.0),
    ("dream", "max_position_embeddings", "max_sequence_length", 32768),
    ("dream", "tie_word_embeddings", "tie_word_embeddings", False),
    ("dream", "rms_norm_eps", "rms_norm_eps", 1e-6),
])
def test_absent_keys_take_the_official_defaults(tmp_path, family, key, attr, official):
    hf = {k: v for k, v in BASE[family].items() if k != key}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    assert getattr(read_config(tmp_path), attr) == official


def test_unknown_keys_are_named_in_the_log(tmp_path, caplog):
    (tmp_path / "config.json").write_text(json.dumps({**BASE["dream"], "qk_layernorm": True}))
    with caplog.at_level(logging.WARNING):
        read_config(tmp_path)
    assert "qk_layernorm" in caplog.text


def test_dream_7b_context_follows_its_config_and_the_engine_tables_fit(tmp_path):
    """Dream-7B's config.json (its shape fields): 131,072 positions, the dream-7b preset's shapes; the
    K/V pool's page tables for that context build without any 7B weights."""
    from backend.engine.kv.pool import KVPool

    hf = {"model_type": "Dream", "architectures": ["DreamModel"], "hidden_size": 3584, "intermediate_size": 18944,
          "num_attention_heads": 28, "num_key_value_heads": 4, "num_hidden_layers": 28, "vocab_size": 152064,
          "max_position_embeddings": 131072, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "hidden_act": "silu",
          "rope_scaling": None, "use_sliding_window": False, "sliding_window": 131072, "max_window_layers": 28,
          "tie_word_embeddings": False, "bos_token_id": 151643, "eos_token_id": 151643, "pad_token_id": 151643,
          "mask_token_id": 151666, "attention_dropout": 0.0, "initializer_range": 0.02, "use_cache": False,
          "torch_dtype": "bfloat16", "transformers_version": "4.46.2"}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    cfg = read_config(tmp_path)
    assert cfg == preset("dream-7b")
    pool = KVPool(cfg, num_pages=4, page_size=16, dtype=torch.bfloat16, device="cpu", max_requests=4)
    assert pool.max_pages_per_head == 131072 // 16


def test_non_default_llada_fields_survive_save_checkpoint(tmp_path):
    """gemma_rms weights are stored as the checkpoint had them (the loader's +1 taken off again)."""
    from backend.models.loader import save_checkpoint

    hf = {**BASE["llada"], "layer_norm_type": "gemma_rms", "input_emb_norm": True, "scale_logits": True,
          "activation_type": "gelu", "weight_tying": True}
    tensors = write_checkpoint(tmp_path / "a", "llada", hf)
    model = load_model(tmp_path / "a", dtype=torch.float64)
    save_checkpoint(model, tmp_path / "b")
    assert read_config(tmp_path / "b") == model.config
    assert _same(_logits(tmp_path / "b"), reference_logits("llada", hf, tensors, IDS))
