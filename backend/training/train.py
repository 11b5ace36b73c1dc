"""Train the default model: LLaDA's masked-diffusion SFT objective on the synthetic tasks.

    python -m backend.training.train --out model_repository/dllm/1/default-model [--device cuda]

Each example is prompt + answer, the answer followed by EOS up to `gen_length` tokens (so the model
learns where to stop). Per example a noise level t in (0, 1] is drawn, each answer token is masked
with probability t, and the loss is the cross-entropy on masked positions weighted by 1/t, summed
and divided by `gen_length` (LLaDA's SFT loss); the prompt is never masked. Everything random comes
from `--seed` (drawn on the host, so CPU and GPU runs see the same examples and masks); a run is
repeatable on the same machine, device and thread count.

`--arch sdar` trains a block-diffusion model instead (SDAR's objective, block_objective.py), from
random weights or from the LLaDA model (`--init-from`, model_init.py converts it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from backend.models.loader import save_checkpoint
from backend.training import char_tokenizer, tasks
from backend.training.block_objective import block_diffusion_loss
from backend.training.data import Curriculum, prefetch
from backend.training.model_init import build
from backend.training.objective import masked_diffusion_loss


@dataclass
class TrainConfig:
    out: str = "model_repository/dllm/1/default-model"
    seed: int = 0
    steps: int = 3000
    # Examples of each task per optimizer step.
    batch: str = "add=16,sort=12,reverse=12,copy=12,kv=16"
    # Which tasks share a micro-batch (one padded forward each): similar lengths together.
    micro_batches: str = "add+sort+reverse+copy,kv"
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    # Model: LLaDA architecture (masked-diffusion SFT), or "sdar" (block diffusion, block_objective.py).
    arch: str = "llada"
    block_size: int = 4  # sdar: the block its training and decoding use
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 6
    intermediate_size: int = 512
    rope_theta: float = 10000.0
    max_sequence_length: int = 512
    init_from: str = ""  # a checkpoint directory to continue from instead of random weights
    # Decoding defaults written to generation_config.json.
    gen_length: int = 32
    block_length: int = 16
    # Answer lengths (EOS padding included) drawn per micro-batch, e.g. "16,32,64,128,256" (empty:
    # gen_length only): the model then answers the same whatever max_tokens a client asks for.
    gen_lengths: str = ""
    # Divide each example's loss by this many tokens (0: its micro-batch's answer length, LLaDA's SFT);
    # with gen_lengths, a fixed number keeps long EOS padding from diluting the answer tokens.
    loss_norm_length: int = 0
    # Fraction of examples drawn as semi-autoregressive decoding states (objective.masks_and_weights),
    # with blocks drawn from semi_ar_blocks.
    semi_ar: float = 0.0
    semi_ar_blocks: str = "16,32"
    # Curriculum (backend.training.data.Curriculum).
    ramp: float = 0.25
    kv_start: int = 40
    kv_min_chars: int = 20
    kv_ramp: float = -1.0  # the key-value context's own ramp fraction (< 0: `ramp`)
    device: str = "auto"  # "auto": cuda when there is one, else cpu
    bf16: bool = True  # bf16 autocast (CPU: the AMX units make matmuls several times faster)
    threads: int = 2
    data_workers: int = 1  # processes making examples ahead of the optimizer (0: in this process)
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

    def semi_ar_block_sizes(self) -> tuple[int, ...]:
        sizes = tuple(int(b) for b in self.semi_ar_blocks.split(",") if b.strip())
        if self.semi_ar and (not sizes or min(sizes) < 1):
            raise ValueError(f"semi_ar_blocks: positive block lengths needed with semi_ar, got {self.semi_ar_blocks!r}")
        return sizes

    def groups(self) -> list[list[str]]:
        groups = [g.split("+") for g in self.micro_batches.split(",")]
        named = [t for g in groups for t in g]
        sizes = self.batch_sizes()
        if sorted(named) != sorted(sizes):
            raise ValueError(f"micro_batches: must name each task of batch ({sorted(sizes)}) once, got {named}")
        return groups


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} asked for, but this torch sees no CUDA device")
    return device


def save(model, cfg: TrainConfig, out: Path, state: dict) -> None:
    save_checkpoint(model, out, dtype=getattr(torch, cfg.save_dtype))
    char_tokenizer.save(out)
    if cfg.arch != "sdar":  # block-diffusion families take the checkpoint's block size and official decoding
        gen = {"max_tokens": cfg.gen_length, "block_length": cfg.block_length, "steps": cfg.gen_length}
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    (out / "training_state.json").write_text(json.dumps(state, indent=2) + "\n")


class Progress:
    """Losses per step and per task, kept on the device until a log line needs them (no sync per step)."""

    def __init__(self, cfg: TrainConfig, curriculum: Curriculum, tasks_: list[str]):
        self.cfg, self.curriculum = cfg, curriculum
        self.t0 = self.window_t0 = time.time()
        self.window_tokens = 0
        self.pending: list[torch.Tensor] = []
        self.task_losses: dict[str, list[torch.Tensor]] = {t: [] for t in tasks_}
        self.history: list[float] = []

    def add(self, step_loss: torch.Tensor, task_losses: dict[str, torch.Tensor], tokens: int) -> None:
        self.pending.append(step_loss)
        for t, v in task_losses.items():
            self.task_losses[t].append(v)
        self.window_tokens += tokens

    def flush(self) -> None:
        if self.pending:
            self.history += torch.stack(self.pending).tolist()
            self.pending.clear()

    def log(self, step: int) -> None:
        self.flush()
        cfg, now = self.cfg, time.time()
        elapsed = now - self.t0
        eta = elapsed / (step + 1) * (cfg.steps - step - 1)
        per_task = " ".join(f"{k}={torch.stack(v).mean().item():.3f}" for k, v in self.task_losses.items() if v)
        for v in self.task_losses.values():
            v.clear()
        window = self.history[-cfg.log_every:]
        print(f"step {step + 1}/{cfg.steps} loss {sum(window) / len(window):.4f} [{per_task}] "
              f"lr {lr_at(cfg, step):.2e} kv<={self.curriculum.at(step).kv_context_chars[1]} "
              f"{self.window_tokens / (now - self.window_t0):.0f} tok/s elapsed {elapsed:.1f}s "
              f"eta {eta / 60:.1f}m", flush=True)
        self.window_tokens, self.window_t0 = 0, now

    def summary(self, step: int) -> dict:
        self.flush()
        tail = self.history[-200:]
        return {"step": step, "minutes": round((time.time() - self.t0) / 60, 1),
                "final_loss": round(sum(tail) / max(1, len(tail)), 4), "loss_window_steps": len(tail)}


def train_step(model, opt, cfg: TrainConfig, batch, gen: torch.Generator, total_examples: int,
               semi_ar_blocks: tuple[int, ...] = ()):
    """One optimizer step over the batch's micro-batches; (step loss, loss per task, tokens)."""
    device, mask_id = model.device, model.config.mask_token_id
    for g in opt.param_groups:
        g["lr"] = lr_at(cfg, batch.step)
    opt.zero_grad(set_to_none=True)
    step_loss, per_task, tokens = torch.zeros((), device=device), {}, 0
    for group in batch.groups:
        names = [t for t, _, _ in group]
        prompts, answers = [p for _, p, _ in group], [a for _, _, a in group]
        if cfg.arch == "sdar":
            per_example, n_tok = block_diffusion_loss(model, prompts, answers, mask_id, gen, cfg.bf16, cfg.block_size,
                                                      model.config.eos_token_id, cfg.loss_norm_length or cfg.gen_length)
        else:
            per_example, n_tok = masked_diffusion_loss(model, prompts, answers,
                                                       mask_id, gen, cfg.bf16, norm_length=cfg.loss_norm_length or None,
                                                       semi_ar=cfg.semi_ar, eos_id=model.config.eos_token_id,
                                                       blocks=semi_ar_blocks)
        (per_example.sum() / total_examples).backward()
        per_example = per_example.detach()
        step_loss += per_example.sum()
        for t in dict.fromkeys(names):  # a micro-batch holds each task's examples back to back
            first = names.index(t)
            per_task[t] = per_example[first:first + names.count(t)].mean()
        tokens += n_tok
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return step_loss / total_examples, per_task, tokens


def train(cfg: TrainConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)  # masks and noise levels, drawn on the host
    out = Path(cfg.out)
    sizes, semi_ar_blocks = cfg.batch_sizes(), cfg.semi_ar_block_sizes()
    curriculum = Curriculum(cfg.steps, cfg.ramp, cfg.kv_start, cfg.kv_min_chars,
                            None if cfg.kv_ramp < 0 else cfg.kv_ramp)
    # The example workers are forked before CUDA is initialised in this process.
    lengths = tuple(int(x) for x in cfg.gen_lengths.split(",") if x.strip())
    batches = prefetch(cfg.data_workers, cfg.seed, sizes, cfg.groups(), curriculum, cfg.gen_length,
                       gen_lengths=lengths)
    model = build(cfg, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters on {device}, {model.config}", flush=True)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98),
                            **({"fused": True} if device.type == "cuda" else {}))
    progress = Progress(cfg, curriculum, list(sizes))
    state = {"config": dataclasses.asdict(cfg), "parameters": n_params, "device": str(device)}

    def checkpoint(step: int) -> None:
        state.update(progress.summary(step))
        save(model, cfg, out, state)

    done = 0
    try:
        for batch in batches:
            progress.add(*train_step(model, opt, cfg, batch, gen, sum(sizes.values()), semi_ar_blocks))
            done = batch.step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                progress.log(batch.step)
            if done % cfg.save_every == 0 or done == cfg.steps:
                checkpoint(done)
    except KeyboardInterrupt:  # Ctrl-C (or SIGINT at the sweep's deadline): keep what was learnt
        if done > state.get("step", 0):
            print(f"interrupted: saving the checkpoint of step {done}", flush=True)
            state["interrupted"] = True
            checkpoint(done)
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
    # A job started in the background by a shell script inherits SIGINT ignored, and Python then keeps
    # it ignored: restore the handler, since SIGINT is how a run is told to save and stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    final = train(parse_args())
    print(f"done: {final['step']} steps in {final['minutes']} min, final loss {final['final_loss']}", flush=True)
