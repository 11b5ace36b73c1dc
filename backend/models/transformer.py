"""The transformer behind LLaDA, Dream, SDAR and Fast-dLLM v2 (they differ only by config flags; the
attention pattern, bidirectional or block-causal, is the attention context's)."""

from __future__ import annotations

import torch
from torch import nn

from backend.models.attention import AttentionContext, PackedBatch
from backend.models.layers import RMSNorm, Rotary, SwiGLU, VocabHead
from backend.models.model_config import ModelConfig


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: Rotary):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_size = self.num_heads * self.head_dim
        self.kv_size = self.num_kv_heads * self.head_dim
        # q, k and v as one matrix: one GEMM per layer instead of three.
        self.qkv_proj = nn.Linear(cfg.hidden_size, self.q_size + 2 * self.kv_size, bias=cfg.qkv_bias)
        self.o_proj = nn.Linear(self.q_size, cfg.hidden_size, bias=cfg.attention_bias)
        # Qwen3 (SDAR): RMSNorm over each head's dimensions of q and k, before rotary.
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.rotary = rotary

    def forward(self, x: torch.Tensor, layer: int, batch: PackedBatch, ctx: AttentionContext) -> torch.Tensor:
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if self.q_norm is not None:  # rows of head_dim (2-D, the shape a fused norm kernel takes)
            q = self.q_norm(q.reshape(-1, self.head_dim)).view(-1, self.q_size)
            k = self.k_norm(k.reshape(-1, self.head_dim)).view(-1, self.kv_size)
        q, k = self.rotary.pair(q.view(-1, self.num_heads, self.head_dim),
                                k.view(-1, self.num_kv_heads, self.head_dim), batch.positions)
        v = v.view(-1, self.num_kv_heads, self.head_dim)
        out = ctx.attend(layer, q, k, v, batch)
        return self.o_proj(out.reshape(-1, self.q_size))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, rotary: Rotary):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attn = SelfAttention(cfg, rotary)
        self.mlp_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = SwiGLU(cfg.hidden_size, cfg.intermediate_size, cfg.activation)

    def forward(self, x, residual, layer: int, batch: PackedBatch, ctx: AttentionContext):
        """`residual` is the stream so far and `x` the previous block's output not yet added to it (None
        for the first block: `x` is the stream). Returns the same pair for the next block, so that each
        residual add is fused into the norm after it: the same sums in the same order as
        `x = x + attn(norm(x)); x = x + mlp(norm(x))`."""
        if residual is None:
            h, residual = self.attn_norm(x), x
        else:
            h, residual = self.attn_norm.add_forward(x, residual)
        h, residual = self.mlp_norm.add_forward(self.attn(h, layer, batch, ctx), residual)
        return self.mlp(h), residual


class DiffusionLM(nn.Module):
    """Token ids in, final-norm hidden states out; `lm_head` is applied by the caller.

    Inputs are packed: `input_ids[T]` hold the rows of `batch.num_seqs` sequences back to back.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        rotary = Rotary(cfg.head_dim, cfg.rope_theta, cfg.max_sequence_length)
        self.layers = nn.ModuleList(Block(cfg, rotary) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = VocabHead(cfg.hidden_size, cfg.vocab_size, self.embed if cfg.tie_word_embeddings else None,
                                 cfg.logit_scale)

    def forward(self, input_ids: torch.Tensor, batch: PackedBatch,
                ctx: AttentionContext | None = None) -> torch.Tensor:
        ctx = ctx or AttentionContext()
        x, residual = self.embed(input_ids), None
        if self.config.embedding_scale != 1.0:  # LLaDA input_emb_norm, on the looked-up rows as the official model
            x = x * self.config.embedding_scale
        for i, layer in enumerate(self.layers):
            x, residual = layer(x, residual, i, batch, ctx)
        return self.norm(x) if residual is None else self.norm.add_forward(x, residual)[0]

    def hidden_rows_for(self, positions: torch.Tensor) -> torch.Tensor:
        """Which hidden-state position predicts each given token position (Dream predicts i+1 from i;
        position 0 is its own predictor, as in Dream's generation code)."""
        return (positions - self.config.logit_shift).clamp_min(0)

    @property
    def device(self) -> torch.device:
        return self.embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype


def init_random_(model: DiffusionLM, seed: int = 0, std: float = 0.02) -> DiffusionLM:
    """Deterministic random weights (normal(0, std) matrices, norms near 1), drawn on the model's own
    device so that real sizes (llada-8b) initialise in seconds on a GPU."""
    gen = torch.Generator(device=model.device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            draw_dtype = torch.float64 if p.dtype == torch.float64 else torch.float32
            noise = torch.randn(p.shape, generator=gen, device=p.device, dtype=draw_dtype)
            p.copy_(1.0 + 0.1 * noise if name.endswith("norm.weight") else std * noise)
    return model
