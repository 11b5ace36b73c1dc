"""Model configuration shared by every architecture, and the named sizes used for tests and GPU work."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

ARCHITECTURES = ("llada", "dream", "sdar", "fast_dllm")
# Block-diffusion families: attention is causal across blocks, bidirectional inside one (block_causal.py).
BLOCK_CAUSAL_ARCHITECTURES = ("sdar", "fast_dllm")
# The gate's activation in the gated MLP down(act(gate x) * up x): LLaDA's activation_type, Dream's hidden_act.
ACTIVATIONS = ("silu", "gelu", "relu")


@dataclass
class ModelConfig:
    """Architecture hyper-parameters plus the special token ids a decoder needs.

    One dataclass for both LLaDA and Dream: the released models differ only in `qkv_bias` and
    `logit_shift` (Dream's hidden state at position i predicts token i+1), so the model code is shared.
    The fields after `logit_shift` carry config values the released checkpoints leave at their neutral
    setting (`config_fields.py` lists which checkpoint fields map onto them).
    """

    arch: str = "llada"
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int = 128
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    max_sequence_length: int = 4096
    qkv_bias: bool = False
    tie_word_embeddings: bool = False
    logit_shift: int = 0
    activation: str = "silu"
    embedding_scale: float = 1.0  # LLaDA input_emb_norm: embeddings x sqrt(hidden_size)
    logit_scale: float = 1.0  # LLaDA scale_logits: logits x 1/sqrt(hidden_size)
    # LLaDA gemma_rms stores each norm weight as (weight - 1): the loader adds this offset, so the
    # model (and its fused kernels) run a plain RMSNorm; save_checkpoint subtracts it again.
    norm_weight_offset: float = 0.0
    mask_token_id: int = 127
    eos_token_id: int = 126
    # Ids that end a generation besides EOS (LLaDA-Instruct's <|eot_id|>).
    extra_stop_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    # Block-diffusion families (SDAR on Qwen3, Fast-dLLM v2 on Qwen2.5). head_dim: Qwen3 names it in the
    # config and it need not be hidden_size / num_heads (None: that quotient). qk_norm: Qwen3's per-head
    # RMSNorm of queries and keys before rotary. attention_bias: Qwen3's bias on q/k/v *and* o.
    # block_size: the default decoding block (SDAR block_size, Fast-dLLM bd_size); 0 for LLaDA / Dream.
    explicit_head_dim: int | None = None
    qk_norm: bool = False
    attention_bias: bool = False
    block_size: int = 0

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch: unknown architecture {self.arch!r}; expected one of {ARCHITECTURES}")
        for name in ("hidden_size", "num_layers", "num_heads", "num_kv_heads", "intermediate_size",
                     "vocab_size", "max_sequence_length"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)!r}")
        if self.explicit_head_dim is not None and (int(self.explicit_head_dim) <= 0 or self.explicit_head_dim % 2):
            raise ValueError(f"head_dim: must be a positive even integer, got {self.explicit_head_dim!r}")
        if self.explicit_head_dim is None and self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size: {self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads: {self.num_kv_heads} does not divide num_heads={self.num_heads}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: {self.activation!r} is not supported (supported: {ACTIVATIONS})")
        if self.logit_shift not in (0, 1):
            raise ValueError(f"logit_shift: must be 0 or 1, got {self.logit_shift!r}")
        if self.block_causal != (self.block_size > 0):
            raise ValueError(f"block_size: {self.block_size} for arch {self.arch!r} (block-diffusion families need a "
                             f"block size > 0, the others 0)")
        for name in ("mask_token_id", "eos_token_id"):
            tid = getattr(self, name)
            if not 0 <= tid < self.vocab_size:
                raise ValueError(f"{name}: {tid} is outside the vocabulary (size {self.vocab_size})")

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.hidden_size // self.num_heads

    @property
    def block_causal(self) -> bool:
        """Causal across blocks, bidirectional inside one: the exact block cache applies."""
        return self.arch in BLOCK_CAUSAL_ARCHITECTURES

    @property
    def stop_token_ids(self) -> list[int]:
        return [self.eos_token_id, *[t for t in self.extra_stop_token_ids if t != self.eos_token_id]]

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V of one token over all layers: what the K/V pool pays per cached position."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


# Real sizes (ANCHORS.md) for GPU performance work with random weights, and tiny ones for tests.
PRESETS: dict[str, ModelConfig] = {
    "llada-8b": ModelConfig(
        arch="llada", hidden_size=4096, num_layers=32, num_heads=32, num_kv_heads=32,
        intermediate_size=12288, vocab_size=126464, rope_theta=500000.0, rms_norm_eps=1e-5,
        max_sequence_length=4096, mask_token_id=126336, eos_token_id=126081,
        extra_stop_token_ids=[126348],
    ),
    "dream-7b": ModelConfig(
        arch="dream", hidden_size=3584, num_layers=28, num_heads=28, num_kv_heads=4,
        intermediate_size=18944, vocab_size=152064, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_sequence_length=131072, qkv_bias=True, logit_shift=1, mask_token_id=151666,
        eos_token_id=151643, pad_token_id=151643,
    ),
    "tiny-llada": ModelConfig(
        arch="llada", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4,
        intermediate_size=96, vocab_size=97, rope_theta=500000.0, max_sequence_length=512,
        mask_token_id=96, eos_token_id=95, extra_stop_token_ids=[94],
    ),
    "tiny-dream": ModelConfig(
        arch="dream", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
        intermediate_size=96, vocab_size=101, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_sequence_length=512, qkv_bias=True, logit_shift=1, mask_token_id=100,
        eos_token_id=99, pad_token_id=99,
    ),
    # Block diffusion at real shapes (model cards: SDAR-1.7B-Chat and SDAR-8B-Chat on Qwen3, Fast_dLLM_v2_1.5B on
    # Qwen2.5-1.5B) and tiny ones for the tests.
    "sdar-1.7b": ModelConfig(
        arch="sdar", hidden_size=2048, num_layers=28, num_heads=16, num_kv_heads=8, explicit_head_dim=128,
        intermediate_size=6144, vocab_size=151936, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_sequence_length=32768, qk_norm=True, block_size=4, mask_token_id=151669, eos_token_id=151643,
    ),
    "sdar-8b": ModelConfig(
        arch="sdar", hidden_size=4096, num_layers=36, num_heads=32, num_kv_heads=8, explicit_head_dim=128,
        intermediate_size=12288, vocab_size=151936, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_sequence_length=32768, qk_norm=True, block_size=4, mask_token_id=151669, eos_token_id=151643,
    ),
    "fast-dllm-1.5b": ModelConfig(
        arch="fast_dllm", hidden_size=1536, num_layers=28, num_heads=12, num_kv_heads=2, intermediate_size=8960,
        vocab_size=151936, rope_theta=1000000.0, rms_norm_eps=1e-6, max_sequence_length=32768, qkv_bias=True,
        tie_word_embeddings=True, logit_shift=1, block_size=32, mask_token_id=151665, eos_token_id=151645,
    ),
    "tiny-sdar": ModelConfig(
        arch="sdar", hidden_size=48, num_layers=2, num_heads=4, num_kv_heads=2, explicit_head_dim=16,
        intermediate_size=96, vocab_size=103, rope_theta=1000000.0, rms_norm_eps=1e-6, max_sequence_length=512,
        qk_norm=True, block_size=4, mask_token_id=102, eos_token_id=101,
    ),
    "tiny-fast-dllm": ModelConfig(
        arch="fast_dllm", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=96,
        vocab_size=107, rope_theta=1000000.0, rms_norm_eps=1e-6, max_sequence_length=512, qkv_bias=True,
        logit_shift=1, block_size=8, mask_token_id=106, eos_token_id=105,
    ),
}


def preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise ValueError(f"model size: unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides)
