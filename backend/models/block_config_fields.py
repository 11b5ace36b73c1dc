"""Every field of the SDAR and Fast-dLLM v2 config classes, and what the loader does with it (the
same three kinds as `config_fields.py`: honoured, refused by value, ignored with the reason).

SDAR's class (`configuration_sdar.SDARConfig`) is Qwen3's plus `block_size` and `mask_token_id`; Fast-dLLM
v2's (`configuration.Fast_dLLM_QwenConfig`) is Qwen2's plus `bd_size`. Defaults are the parent Qwen
classes'; the fields the diffusion classes add take the released model cards' values where a config
omits them (SDAR-1.7B-Chat: block_size 4, mask 151669; Fast_dLLM_v2: bd_size 32, and the mask id
151665 and stop id 151645 that its generation code hard-codes: the config does not carry them).
"""

from __future__ import annotations

from backend.models.config_fields import DROPOUT, INIT, Field, _ignored

ROPE_DEFAULT = (None, {"type": "default"}, {"rope_type": "default"})
SLIDING = "read only with use_sliding_window, which is refused"
TRAINING = "a training switch; inference logits do not depend on it"

# Qwen2 / Qwen3 fields both families share.
_QWEN: dict[str, Field] = {
    "vocab_size": Field(151936),
    "hidden_size": Field(4096),
    "intermediate_size": Field(22016),
    "num_hidden_layers": Field(32),
    "num_attention_heads": Field(32),
    "num_key_value_heads": Field(32),  # None: num_attention_heads
    "hidden_act": Field("silu", ("silu", "swish", "gelu", "relu")),
    "max_position_embeddings": Field(32768),
    "initializer_range": _ignored(0.02, INIT),
    "rms_norm_eps": Field(1e-6),
    "use_cache": _ignored(True, "the engine owns its K/V cache"),
    "tie_word_embeddings": Field(False),
    "rope_theta": Field(10000.0),
    # Scaled rotary embeddings (linear, dynamic, yarn, ...) are not implemented.
    "rope_scaling": Field(None, ROPE_DEFAULT),
    # Sliding-window layers would see a different mask: not implemented.
    "use_sliding_window": Field(False, (False,)),
    "sliding_window": _ignored(4096, SLIDING),
    "max_window_layers": _ignored(28, SLIDING),
    "attention_dropout": _ignored(0.0, DROPOUT),
    "bos_token_id": _ignored(None, "diffusion decoding never prepends it; the chat template does"),
    "pad_token_id": _ignored(None, "the embedding's padding row only matters to training gradients"),
}

SDAR_FIELDS: dict[str, Field] = {
    **_QWEN,
    "head_dim": Field(128),  # Qwen3 names it; None: hidden_size / num_attention_heads
    "attention_bias": Field(False),  # bias on q, k, v and o
    "block_size": Field(4),  # the training block: the default decoding block_length
    "mask_token_id": Field(151669),
    "eos_token_id": Field(151643),
    # Keys SDAR's released config.json carries that only steer training or kernels.
    "attn_implementation": _ignored("flex_attention", "the same attention by another kernel"),
    "fuse_cross_entropy": _ignored(True, TRAINING),
    "micro_forward": _ignored(False, TRAINING),
    "skip_checkpoint": _ignored(False, TRAINING),
    "debug": _ignored(False, TRAINING),
    "ep_size": _ignored(1, "expert parallelism of the MoE siblings; the dense models have no experts"),
    "use_deepep": _ignored(False, "expert-parallel communication kernels of the MoE siblings"),
}

FAST_DLLM_FIELDS: dict[str, Field] = {
    **_QWEN,
    "bd_size": Field(32),  # the block-diffusion block: the default decoding block_length
    # Qwen2's per-layer attention kinds: every layer full attention (the released models) is implemented.
    "layer_types": Field(None),
    "mask_token_id": Field(151665),
    "eos_token_id": Field(151645),
}


def check_layer_types(value, num_layers: int) -> None:
    """Only full attention in every layer (the released models) is implemented."""
    if value is None:
        return
    if not isinstance(value, list) or len(value) != num_layers or any(t != "full_attention" for t in value):
        raise ValueError(f"layer_types {value!r} is not supported (supported: 'full_attention' in every layer)")
