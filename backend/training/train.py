"""Train the default model: LLaDA's masked-diffusion SFT objective on the synthetic tasks.

    python -m backend.training.train --out model_repository/dllm/1/default-model

Each example is prompt + answer, the answer followed by EOS up to `gen_length` tokens (so the model
learns where to stop). Per example a noise level t in (0, 1] is drawn, each answer token is masked
with probability t, and the loss is the cross-entropy on masked positions weighted by 1/t, summed
and divided by `gen_length` (LLaDA's SFT loss); the prompt is never masked. Everything random comes
from `--seed`, so a run is repeatable on the same machine and thread count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from backend.config import ModelConfig
from backend.loader import save_checkpoint
from backend.models import PackedBatch, build_model
from backend.training import char_tokenizer, tasks
from backend.training.padded_attention import PaddedAttention


@dataclass
class TrainConfig:
    out: str = "model_repository/dllm/1/default-model"
    seed: int = 0
    steps: int = 3000
    # Examples of each task per optimizer step (one padded micro-batch per task: similar lengths).
    batch: str = "add=16,sort=12,reverse=12,copy=12,kv=16"
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Model: LLaDA architecture, small.
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 6
    intermediate_size: int = 512
    rope_theta: float = 10000.0
    max_sequence_length: int = 512
    # Decoding defaults written to generation_config.json.
    gen_length: int = 32
    block_length: int = 16
    # Curriculum: the upper bounds of lengths (key-value context, string and list lengths, addend
    # digits) grow from short to the tasks' full ranges over the first `ramp` fraction of the steps,
    # so each mechanism is first learnt where it is easy. Short examples stay in the mix afterwards.
    ramp: float = 0.25
    kv_start: int = 40
    kv_min_chars: int = 20
    bf16: bool = True  # bf16 autocast: the CPU's AMX units make matmuls several times faster
    threads: int = 2
    log_every: int = 20
    save_every: int = 250
    save_dtype: str = "float32"

    def batch_sizes(self) -> dict[str, int]:
        sizes = {}
        for part in self.batch.split(","):
            name, n = part.split("=")
            if name not in tasks.TASKS:
                raise ValueError(f"batch: unknown task {name!r}; known: {tasks.TASKS}")
            sizes[name] = int(n)
        return sizes


def model_config(cfg: TrainConfig) -> ModelConfig:
    ids = char_tokenizer.special_ids()
    return ModelConfig(arch="llada", hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
                       num_heads=cfg.num_heads, num_kv_heads=cfg.num_heads,
                       intermediate_size=cfg.intermediate_size, vocab_size=char_tokenizer.build().get_vocab_size(),
                       rope_theta=cfg.rope_theta, max_sequence_length=cfg.max_sequence_length,
                       mask_token_id=ids["mask"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])


def init_weights_(model, seed: int):
    """Fan-in scaled init (std 1/sqrt(fan_in); residual outputs shrunk by 1/sqrt(2 * layers)).

    The models' `init_random_` (std 0.02, for performance work) leaves attention almost uniform at
    this width: q.k logits start near 0.1 and retrieval-style heads take hundreds of steps to form.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0)
                continue
            std = 1.0 if name.startswith("embed") else p.shape[1] ** -0.5
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                std /= math.sqrt(2 * len(model.layers))
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model


def task_config(cfg: TrainConfig, step: int) -> tasks.TaskConfig:
    full = tasks.TaskConfig()
    r = min(1.0, step / max(1.0, cfg.ramp * cfg.steps))

    def grow(lo: int, start: int, end: int) -> tuple[int, int]:
        return lo, max(lo, round(start + r * (end - start)))

    return dataclasses.replace(
        full,
        add_max_digits=grow(1, 2, full.add_max_digits)[1],
        sort_length=grow(full.sort_length[0], 5, full.sort_length[1]),
        string_length=grow(full.string_length[0], 6, full.string_length[1]),
        kv_context_chars=grow(cfg.kv_min_chars, cfg.kv_start, full.kv_context_chars[1]),
    )


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def encode_examples(tok, examples: list[tasks.Example], gen_length: int, eos: int):
    prompts, answers = [], []
    for ex in examples:
        ans = tok.encode(ex.answer).ids
        if len(ans) >= gen_length:
            raise ValueError(f"gen_length: answer of {len(ans)} tokens leaves no room for EOS ({ex})")
        prompts.append(tok.encode(ex.prompt).ids)
        answers.append(ans + [eos] * (gen_length - len(ans)))
    return prompts, answers


def micro_batch_loss(model, prompts, answers, mask_id: int, gen: torch.Generator, bf16: bool):
    """Sum over examples of (sum over masked answer tokens of CE / t) / gen_length."""
    n, gen_len = len(prompts), len(answers[0])
    # Stratified t (one draw per 1/n slice of (0, 1]): the same objective with less variance.
    t = (torch.arange(n) + torch.rand(n, generator=gen)) / n
    t = t[torch.randperm(n, generator=gen)].clamp_min(1e-3)
    masked = torch.rand(n, gen_len, generator=gen) < t[:, None]
    ans = torch.tensor(answers)
    noisy = torch.where(masked, torch.full_like(ans, mask_id), ans)
    ids = torch.cat([torch.cat([torch.tensor(p), noisy[i]]) for i, p in enumerate(prompts)])
    lengths = [len(p) + gen_len for p in prompts]
    batch = PackedBatch.contiguous(lengths)
    # Packed row of every answer position, then keep the masked ones only for the vocabulary head.
    starts = batch.cu_seqlens[:-1].long() + torch.tensor([len(p) for p in prompts])
    rows = (starts[:, None] + torch.arange(gen_len)[None, :])[masked]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        hidden = model(ids, batch, PaddedAttention(batch))
        logits = model.lm_head(hidden[rows])
    ce = F.cross_entropy(logits.float(), ans[masked], reduction="none")
    weight = (1.0 / t)[:, None].expand(n, gen_len)[masked]
    return (ce * weight).sum() / gen_len, int(sum(lengths))


def save(model, cfg: TrainConfig, out: Path, state: dict) -> None:
    save_checkpoint(model, out, dtype=getattr(torch, cfg.save_dtype))
    char_tokenizer.save(out)
    gen = {"max_tokens": cfg.gen_length, "block_length": cfg.block_length, "steps": cfg.gen_length}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    (out / "training_state.json").write_text(json.dumps(state, indent=2) + "\n")


def train(cfg: TrainConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    out = Path(cfg.out)
    tok = char_tokenizer.build()
    mcfg = model_config(cfg)
    model = init_weights_(build_model(mcfg, torch.float32), cfg.seed).train().requires_grad_(True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters, {mcfg}", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98))
    sizes = cfg.batch_sizes()
    total_examples = sum(sizes.values())
    t0, window_tokens, window_t0 = time.time(), 0, time.time()
    losses, task_losses = [], {k: [] for k in sizes}
    state = {"config": dataclasses.asdict(cfg), "parameters": n_params}
    for step in range(cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        tcfg = task_config(cfg, step)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for task, n in sizes.items():
            examples = [tasks.sample(task, rng, tcfg) for _ in range(n)]
            prompts, answers = encode_examples(tok, examples, cfg.gen_length, mcfg.eos_token_id)
            loss, n_tok = micro_batch_loss(model, prompts, answers, mcfg.mask_token_id, gen, cfg.bf16)
            (loss / total_examples).backward()
            step_loss += loss.item()
            task_losses[task].append(loss.item() / n)
            window_tokens += n_tok
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(step_loss / total_examples)
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
            now = time.time()
            elapsed = now - t0
            eta = elapsed / (step + 1) * (cfg.steps - step - 1)
            per_task = " ".join(f"{k}={sum(v[-cfg.log_every:]) / len(v[-cfg.log_every:]):.3f}"
                                for k, v in task_losses.items())
            print(f"step {step + 1}/{cfg.steps} loss {sum(losses[-cfg.log_every:]) / cfg.log_every:.4f} "
                  f"[{per_task}] lr {lr_at(cfg, step):.2e} kv<={tcfg.kv_context_chars[1]} "
                  f"{window_tokens / (now - window_t0):.0f} tok/s elapsed {elapsed / 60:.1f}m "
                  f"eta {eta / 60:.1f}m", flush=True)
            window_tokens, window_t0 = 0, now
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            tail = losses[-200:]
            state.update(step=step + 1, minutes=round((time.time() - t0) / 60, 1),
                         final_loss=round(sum(tail) / len(tail), 4), loss_window_steps=len(tail))
            model.eval()
            save(model, cfg, out, state)
            model.train()
    return state


def parse_args(argv=None) -> TrainConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(f.type, str), default=f.default)
    return TrainConfig(**vars(p.parse_args(argv)))


if __name__ == "__main__":
    final = train(parse_args())
    print(f"done: {final['step']} steps in {final['minutes']} min, final loss {final['final_loss']}", flush=True)
