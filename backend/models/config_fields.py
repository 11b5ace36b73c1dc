"""Every field of the official LLaDA and Dream config classes, and what the loader does with it.

A checkpoint's `config.json` is read through these tables, so that no value is taken silently:

- honoured: the model is built with it (a key that is absent takes the official class's default);
- refused: only the listed values are implemented; any other raises `ValueError` naming the field,
  which the loader prefixes with the file (`.../config.json: activation_type 'swiglu' is not supported
  (supported: 'silu', 'gelu', 'relu')`);
- ignored: the field cannot change inference logits (initialisation, dropout, training or
  implementation details); the reason is written beside it.

A key in no table is logged by name: a field a newer config class adds is visible, not dropped.
Defaults are the official classes' (LLaDA `configuration_llada.py` ModelConfig / LLaDAConfig, Dream
`configuration_dream.py` DreamConfig), which are not always the released checkpoints' values.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Field:
    default: object
    supported: tuple | None = None  # the only values implemented; None: every value is
    ignored: str = ""  # why the field cannot change logits; "" when it is honoured

    def check(self, name: str, value) -> None:
        if self.supported is not None and value not in self.supported:
            allowed = ", ".join(repr(v) for v in self.supported)
            raise ValueError(f"{name} {value!r} is not supported (supported: {allowed})")


def _ignored(default, why: str) -> Field:
    return Field(default, ignored=why)


DROPOUT = "dropout is off at inference"
INIT = "weight initialisation only"

LLADA_FIELDS: dict[str, Field] = {
    "d_model": Field(768),
    "n_heads": Field(12),
    "n_kv_heads": Field(None),  # None: n_heads (or 1 with multi_query_attention)
    "n_layers": Field(12),
    "mlp_ratio": Field(4),  # the MLP width when mlp_hidden_size is None
    "mlp_hidden_size": Field(None),
    # The llama block gates: act(ff_proj x) * up_proj x. 'swiglu' halves ff_proj's output before the
    # product, which the official llama block cannot multiply with up_proj: it fails there too.
    "activation_type": Field("swiglu", ("silu", "gelu", "relu")),
    # 'sequential' (fused att_proj, ungated MLP) and 'parallel' are other networks: not implemented.
    "block_type": Field("sequential", ("llama",)),
    # >1 renames the tensors (transformer.block_groups.*); the official loader of LLaDA-8B uses 1.
    "block_group_size": Field(1, (1,)),
    "alibi": Field(False, (False,)),  # the official forward asserts it is off
    "alibi_bias_max": _ignored(8.0, "read only with alibi, which is refused"),
    "rope": Field(False, (True,)),  # the official forward asserts rotary embeddings
    # False rotates in the activation dtype: only the full-precision rotation is implemented.
    "rope_full_precision": Field(True, (True,)),
    "flash_attention": _ignored(False, "the same attention by another kernel"),
    "attention_dropout": _ignored(0.1, DROPOUT),
    "multi_query_attention": Field(None),
    "attention_layer_norm": Field(False, (False,)),  # q/k norms: extra tensors, not implemented
    "residual_dropout": _ignored(0.1, DROPOUT),
    "embedding_dropout": _ignored(0.1, DROPOUT),
    "input_emb_norm": Field(False),  # embeddings x sqrt(d_model)
    # 'default' / 'low_precision' are LayerNorm (mean removed, eps 1e-5), 'amd_compatible' has no
    # implementation in the official code either: only the RMS norms are implemented.
    "layer_norm_type": Field("default", ("rms", "gemma_rms")),
    "layer_norm_with_affine": Field(True, (True,)),  # norms without weights: not implemented
    "rms_norm_eps": Field(1e-5),
    "attention_layer_norm_with_affine": _ignored(True, "read only with attention_layer_norm, which is refused"),
    "max_sequence_length": Field(1024),
    "rope_theta": Field(10000.0),
    "include_qkv_bias": Field(False),
    "include_bias": Field(False, (False,)),  # biases on every linear layer: not implemented
    "bias_for_layer_norm": Field(None, (None, False)),  # norm biases: not implemented
    "scale_logits": Field(False),  # logits x 1/sqrt(d_model)
    "vocab_size": Field(50257),
    "embedding_size": Field(50304),  # the embedding rows (>= vocab_size); None: vocab_size
    "weight_tying": Field(True),
    "eos_token_id": Field(50256),
    "pad_token_id": Field(50256),
    "mask_token_id": Field(50256),
    "init_device": _ignored(None, INIT),
    "init_fn": _ignored("normal", INIT),
    "init_std": _ignored(0.02, INIT),
    "init_cutoff_factor": _ignored(None, INIT),
    "precision": _ignored(None, "training precision; the serving dtype is the engine's setting"),
    "use_cache": _ignored(False, "the engine owns its K/V cache"),  # LLaDAConfig's own argument
}

DREAM_FIELDS: dict[str, Field] = {
    "vocab_size": Field(151936),
    "hidden_size": Field(4096),
    "intermediate_size": Field(22016),
    "num_hidden_layers": Field(32),
    "num_attention_heads": Field(32),
    "num_key_value_heads": Field(32),  # None: num_attention_heads
    # transformers' ACT2FN names whose function is implemented ('swish' is SiLU).
    "hidden_act": Field("silu", ("silu", "swish", "gelu", "relu")),
    "max_position_embeddings": Field(32768),  # the served context
    "initializer_range": _ignored(0.02, INIT),
    "rms_norm_eps": Field(1e-6),
    "use_cache": _ignored(False, "the engine owns its K/V cache"),
    "tie_word_embeddings": Field(False),
    "rope_theta": Field(10000.0),
    # Scaled rotary embeddings (linear, dynamic, yarn, llama3, ...) are not implemented.
    "rope_scaling": Field(None, (None, {"type": "default"}, {"rope_type": "default"})),
    # Dream's attention is always full and bidirectional; a sliding window is not implemented.
    "use_sliding_window": Field(False, (False,)),
    "sliding_window": _ignored(4096, "read only with use_sliding_window, which is refused"),
    "max_window_layers": _ignored(28, "read only with use_sliding_window, which is refused"),
    "attention_dropout": _ignored(0.0, DROPOUT),
    "mask_token_id": Field(151666),
    "pad_token_id": Field(151643),
    # Not DreamConfig arguments but PretrainedConfig's: None there; Dream-7B's value here, because
    # generation needs an end token.
    "eos_token_id": Field(151643),
    "bos_token_id": _ignored(None, "diffusion decoding never prepends it; the chat template does"),
}

# Keys every Hugging Face config may carry (PretrainedConfig, the exporter), and this project's own.
COMMON_IGNORED = {
    "architectures": "the architecture is told by model_type / the keys (loader.detect_arch)",
    "auto_map": "remote-code class names",
    "model_type": "read by loader.detect_arch",
    "torch_dtype": "the serving dtype is the engine's setting",
    "transformers_version": "exporter version",
    "_name_or_path": "exporter metadata",
}
PROJECT_FIELDS: dict[str, Field] = {
    # End-of-turn ids that also stop a generation (LLaDA-Instruct's <|eot_id|>); written by save_checkpoint.
    "extra_stop_token_ids": Field([]),
}


def resolve(hf: dict, fields: dict[str, Field], family: str) -> dict:
    """Every field of `fields` (and the project's), with the official default where `hf` lacks it;
    refused values raise, unknown keys are logged by name."""
    table = {**fields, **PROJECT_FIELDS}
    out = {}
    for name, f in table.items():
        value = hf.get(name, f.default)
        f.check(name, value)
        out[name] = value
    unknown = sorted(set(hf) - set(table) - set(COMMON_IGNORED))
    if unknown:
        log.warning("config.json: %s keys not in the official config class, not used: %s", family, unknown)
    return out
