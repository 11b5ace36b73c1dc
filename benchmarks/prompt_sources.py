"""Where benchmark prompts come from: the bundled model's tasks (text with a checkable answer), or
synthetic token ids of an exact length for random-weight models at real size.

A source turns (kind, target length, seed) into a prompt. Synthetic prompts are a pure function of
(length, seed), so a saved workload stores only those two numbers and replays to the same ids.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from backend.training import tasks

SHORT_TASKS = ("add", "sort", "reverse", "copy")


@dataclass
class Prompt:
    text: str | None = None
    answer: str | None = None  # the exact expected generation, when the task has one
    task: str | None = None
    prompt_len: int | None = None  # synthetic: token count
    prompt_seed: int | None = None  # synthetic: seed of the ids


class TaskPrompts:
    """Held-out prompts of the bundled model's tasks (the model never trained on them).

    Short prompts are the arithmetic / sorting / string tasks; a long prompt is a key-value lookup
    whose context is sized to the requested length (the model's tokenizer is one token per character,
    so characters approximate tokens)."""

    def make(self, kind: str, length: int, seed: int) -> Prompt:
        rng = random.Random(f"task-prompt:{seed}")
        if kind == "long":
            chars = max(20, length - 12)  # room for the "get xx =" question
            cfg = tasks.TaskConfig(kv_context_chars=(chars, chars))
            ex = tasks.sample("kv", rng, cfg, held_out=True)
        else:
            ex = tasks.sample(rng.choice(SHORT_TASKS), rng, held_out=True)
        return Prompt(text=ex.prompt, answer=ex.answer, task=ex.task)


class SyntheticPrompts:
    """Random token ids that avoid the model's special ids (mask, EOS, stop, pad)."""

    def __init__(self, vocab_size: int, special_ids: list[int]):
        self.vocab_size = vocab_size
        self.special = set(special_ids)
        if self.vocab_size - len(self.special) < 2:
            raise ValueError("vocab_size: too small for synthetic prompts")

    def make(self, kind: str, length: int, seed: int) -> Prompt:
        return Prompt(prompt_len=max(1, int(length)), prompt_seed=seed)

    def ids(self, length: int, seed: int) -> list[int]:
        rng = random.Random(f"synthetic:{seed}")
        out = []
        while len(out) < length:
            t = rng.randrange(self.vocab_size)
            if t not in self.special:
                out.append(t)
        return out


def make_source(name: str, model_config) -> TaskPrompts | SyntheticPrompts:
    """`tasks`: the bundled model's task prompts (needs its character tokenizer); `synthetic`: token ids."""
    if name == "tasks":
        return TaskPrompts()
    if name == "synthetic":
        specials = [model_config.mask_token_id, *model_config.stop_token_ids]
        if model_config.pad_token_id is not None:
            specials.append(model_config.pad_token_id)
        return SyntheticPrompts(model_config.vocab_size, specials)
    raise ValueError(f"prompts: unknown prompt source {name!r}; known: tasks, synthetic")
