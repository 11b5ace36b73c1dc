"""The training example stream: per optimizer step, encoded examples of every task.

The stream depends only on the seed and the step (the curriculum grows lengths with the step), so a
run draws the same examples whether batches are made in this process or in a prefetching worker.
Making examples is pure Python (tens of ms for a large step); on a GPU that would idle the device, so
`prefetch` moves it into worker processes that stay a few steps ahead.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from backend.training import char_tokenizer, tasks


@dataclass
class Curriculum:
    """The upper bounds of lengths (key-value context, string and list lengths, addend digits) grow
    from short to the tasks' full ranges over the first `ramp` fraction of the steps, so each mechanism
    is first learnt where it is easy. Short examples stay in the mix afterwards."""

    steps: int
    ramp: float = 0.25
    kv_start: int = 40
    kv_min_chars: int = 20
    kv_ramp: float | None = None  # the key-value context's own ramp (None: `ramp`)

    def at(self, step: int) -> tasks.TaskConfig:
        full = tasks.TaskConfig()
        r = min(1.0, step / max(1.0, self.ramp * self.steps))
        kv_ramp = self.ramp if self.kv_ramp is None else self.kv_ramp
        r_kv = min(1.0, step / max(1.0, kv_ramp * self.steps))

        def grow(lo: int, start: int, end: int, r: float = r) -> tuple[int, int]:
            return lo, max(lo, round(start + r * (end - start)))

        return dataclasses.replace(
            full,
            add_max_digits=grow(1, 2, full.add_max_digits)[1],
            sort_length=grow(full.sort_length[0], 5, full.sort_length[1]),
            string_length=grow(full.string_length[0], 6, full.string_length[1]),
            kv_context_chars=grow(self.kv_min_chars, self.kv_start, full.kv_context_chars[1], r_kv),
        )


@dataclass
class StepBatch:
    """One step's examples: `groups[i]` is one micro-batch, a list of (task, prompt ids, answer ids);
    answers are padded with EOS to the micro-batch's length (`group_length`)."""

    step: int
    groups: list[list[tuple[str, list[int], list[int]]]]


def encode(tok, ex: tasks.Example, gen_length: int, eos: int) -> tuple[list[int], list[int]]:
    ans = tok.encode(ex.answer).ids
    if len(ans) >= gen_length:
        raise ValueError(f"gen_length: answer of {len(ans)} tokens leaves no room for EOS ({ex})")
    return tok.encode(ex.prompt).ids, ans + [eos] * (gen_length - len(ans))


def group_length(tok, examples: list[tasks.Example], seed: int, step: int, group: int, gen_length: int,
                 gen_lengths: tuple[int, ...]) -> int:
    """The answer length (EOS padding included) of one micro-batch: `gen_length`, or with
    `gen_lengths` one of them drawn per (step, micro-batch), raised to fit its longest answer + EOS.
    Serving pads an answer with as many positions as the client's max_tokens; a model trained at one
    length only answers at that length (issue 22)."""
    if not gen_lengths:
        return gen_length
    drawn = random.Random(f"{seed}:len:{step}:{group}").choice(gen_lengths)
    return max(drawn, 1 + max(len(tok.encode(ex.answer).ids) for ex in examples))


def stream(seed: int, sizes: dict[str, int], groups: list[list[str]], curriculum: Curriculum,
           gen_length: int, shard: tuple[int, int] = (0, 1), gen_lengths: tuple[int, ...] = ()) -> Iterator[StepBatch]:
    """The steps `i` with `i % shard[1] == shard[0]`. Every (task, step) draws from its own seeded
    generator, so a step's examples depend on neither the other tasks' sizes nor the sharding."""
    tok = char_tokenizer.build()
    eos = char_tokenizer.special_ids(tok)["eos"]
    for step in range(shard[0], curriculum.steps, shard[1]):
        tcfg = curriculum.at(step)
        drawn = {}
        for t, n in sizes.items():
            rng = random.Random(f"{seed}:{t}:{step}")
            drawn[t] = [tasks.sample(t, rng, tcfg) for _ in range(n)]
        batch = []
        for gi, group in enumerate(groups):
            examples = [(t, ex) for t in group for ex in drawn[t]]
            length = group_length(tok, [ex for _, ex in examples], seed, step, gi, gen_length, gen_lengths)
            batch.append([(t, *encode(tok, ex, length, eos)) for t, ex in examples])
        yield StepBatch(step, batch)


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, *args):
        self.args = args

    def __iter__(self):
        # Worker k makes steps k, k + W, ...; the loader takes one item from each worker in turn,
        # so the steps arrive in order.
        info = torch.utils.data.get_worker_info()
        *args, gen_lengths = self.args
        return stream(*args, shard=(info.id, info.num_workers) if info else (0, 1), gen_lengths=gen_lengths)


def _identity(batch):
    return batch


def prefetch(workers: int, *args, gen_lengths: tuple[int, ...] = ()) -> Iterator[StepBatch]:
    """`stream(*args)`, made by `workers` worker processes (0: in this process)."""
    if workers <= 0:
        return stream(*args, gen_lengths=gen_lengths)
    loader = torch.utils.data.DataLoader(_Stream(*args, gen_lengths), batch_size=None, num_workers=workers,
                                         prefetch_factor=8, collate_fn=_identity)
    return iter(loader)
