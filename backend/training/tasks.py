"""Seeded generators of prompts with exactly checkable answers, shared by training and evaluation.

Prompts are plain text ending in " =" (addition in "=", key-value lookup in ": "); the answer is the
exact text the model should generate before EOS:

    add      "123+4567="                       -> "4690"
    sort     "sort qdkab ="                    -> "abdkq"
    reverse  "reverse hello ="                 -> "olleh"
    copy     "copy hello ="                    -> "hello"
    kv       "ab: 123\\ncd: 45\\n...get ab ="     -> "123"   (a 100-300 character context)

The held-out split is a hash of (task, prompt): an example is held out when its hash falls in a
fixed 1/HELD_OUT_MOD slice. Training rejects those, evaluation keeps only those, so the two can never
share an example whatever seeds are used.
"""

from __future__ import annotations

import hashlib
import random
import string
from dataclasses import dataclass

TASKS = ("add", "sort", "reverse", "copy", "kv")
HELD_OUT_MOD = 16
EVAL_SEED = 20240601  # the fixed held-out set of `backend.oracle.evaluate`
LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class Example:
    task: str
    prompt: str
    answer: str


@dataclass
class TaskConfig:
    """Size ranges of every task (inclusive). The defaults are what the shipped model is evaluated on."""

    add_max_digits: int = 4
    sort_length: tuple[int, int] = (3, 10)
    string_length: tuple[int, int] = (3, 16)
    kv_context_chars: tuple[int, int] = (100, 300)
    kv_key_chars: int = 2
    kv_value_digits: int = 3


def _add(rng: random.Random, cfg: TaskConfig) -> Example:
    # Digit counts uniform first, so that short sums are as common as long ones.
    da, db = rng.randint(1, cfg.add_max_digits), rng.randint(1, cfg.add_max_digits)
    a = rng.randint(0 if da == 1 else 10 ** (da - 1), 10 ** da - 1)
    b = rng.randint(0 if db == 1 else 10 ** (db - 1), 10 ** db - 1)
    return Example("add", f"{a}+{b}=", str(a + b))


def _sort(rng: random.Random, cfg: TaskConfig) -> Example:
    # Letters, repeats allowed: one token per item, so the answer is checkable character by character.
    w = "".join(rng.choice(LETTERS) for _ in range(rng.randint(*cfg.sort_length)))
    return Example("sort", f"sort {w} =", "".join(sorted(w)))


def _word(rng: random.Random, cfg: TaskConfig) -> str:
    return "".join(rng.choice(LETTERS) for _ in range(rng.randint(*cfg.string_length)))


def _reverse(rng: random.Random, cfg: TaskConfig) -> Example:
    w = _word(rng, cfg)
    return Example("reverse", f"reverse {w} =", w[::-1])


def _copy(rng: random.Random, cfg: TaskConfig) -> Example:
    w = _word(rng, cfg)
    return Example("copy", f"copy {w} =", w)


def _kv(rng: random.Random, cfg: TaskConfig) -> Example:
    """`key: value` lines up to a context length drawn from the range, then a question for one key
    drawn uniformly over the lines (so the answer is as often far from the question as near). The
    question ends like a context line ("get ab: "), so the answer sits where the value sits in its line."""
    target = rng.randint(*cfg.kv_context_chars)
    lines: list[str] = []
    keys: set[str] = set()
    values: list[str] = []
    length = 0
    while True:
        key = "".join(rng.choice(LETTERS) for _ in range(cfg.kv_key_chars))
        if key in keys:
            continue
        value = str(rng.randint(10 ** (cfg.kv_value_digits - 1), 10 ** cfg.kv_value_digits - 1))
        line = f"{key}: {value}\n"
        if lines and length + len(line) > target:
            break
        keys.add(key)
        lines.append(line)
        values.append(value)
        length += len(line)
    i = rng.randrange(len(lines))
    key = lines[i].split(":")[0]
    return Example("kv", "".join(lines) + f"get {key}: ", values[i])


GENERATORS = {"add": _add, "sort": _sort, "reverse": _reverse, "copy": _copy, "kv": _kv}


def is_held_out(ex: Example) -> bool:
    digest = hashlib.sha256(f"{ex.task}\0{ex.prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % HELD_OUT_MOD == 0


def sample(task: str, rng: random.Random, cfg: TaskConfig | None = None, held_out: bool = False) -> Example:
    """One example of `task` from the training split (or the held-out split), drawn with `rng`."""
    if task not in GENERATORS:
        raise ValueError(f"task: unknown task {task!r}; known: {TASKS}")
    cfg = cfg or TaskConfig()
    while True:
        ex = GENERATORS[task](rng, cfg)
        if is_held_out(ex) == held_out:
            return ex


def held_out_set(per_task: int, tasks: tuple[str, ...] = TASKS, seed: int = EVAL_SEED,
                 cfg: TaskConfig | None = None) -> list[Example]:
    """The fixed evaluation set: `per_task` distinct held-out examples of each task, in task order.
    A larger `per_task` extends a smaller one (same seed, same first examples)."""
    out = []
    for task in tasks:
        # One stream per task, so adding a task does not change the others' examples.
        rng = random.Random(f"{seed}:{task}")
        seen: set[str] = set()
        while len(seen) < per_task:
            ex = sample(task, rng, cfg, held_out=True)
            if ex.prompt not in seen:
                seen.add(ex.prompt)
                out.append(ex)
    return out
