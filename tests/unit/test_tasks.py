"""The task generators (determinism, answers, train/held-out disjointness) and the character tokenizer."""

from __future__ import annotations

import json
import random

import pytest

from backend.models.tokenizer import Tokenizer
from backend.training import char_tokenizer, tasks


def _stream(task, seed, n, held_out=False):
    rng = random.Random(seed)
    return [tasks.sample(task, rng, held_out=held_out) for _ in range(n)]


@pytest.mark.parametrize("task", tasks.TASKS)
def test_generators_are_deterministic(task):
    assert _stream(task, 7, 30) == _stream(task, 7, 30)
    assert _stream(task, 7, 30) != _stream(task, 8, 30)
    assert tasks.held_out_set(5, (task,)) == tasks.held_out_set(5, (task,))


def test_held_out_set_is_fixed_and_extends():
    small, large = tasks.held_out_set(3), tasks.held_out_set(6)
    assert len(small) == 3 * len(tasks.TASKS) and len(large) == 6 * len(tasks.TASKS)
    for task in tasks.TASKS:
        assert [e for e in small if e.task == task] == [e for e in large if e.task == task][:3]
    assert all(tasks.is_held_out(e) for e in large)


@pytest.mark.parametrize("task", tasks.TASKS)
def test_training_never_yields_held_out_examples(task):
    held = {e.prompt for e in tasks.held_out_set(50, (task,))}
    train = _stream(task, 0, 2000)
    assert not any(tasks.is_held_out(e) for e in train)
    assert held.isdisjoint(e.prompt for e in train)
    # The split is a property of the example, not of the seed: the eval seed's training draws stay out too.
    assert held.isdisjoint(e.prompt for e in _stream(task, tasks.EVAL_SEED, 500))


def test_answers_are_correct():
    for ex in _stream("add", 1, 200):
        a, b = ex.prompt.rstrip("=").split("+")
        assert int(ex.answer) == int(a) + int(b) and max(len(a), len(b)) <= 4
    for ex in _stream("sort", 1, 200):
        letters = ex.prompt[len("sort "):-len(" =")]
        assert ex.answer == "".join(sorted(letters)) and 3 <= len(letters) <= 10 and letters.isalpha()
    for ex in _stream("reverse", 1, 50):
        assert ex.prompt == f"reverse {ex.answer[::-1]} ="
    for ex in _stream("copy", 1, 50):
        assert ex.prompt == f"copy {ex.answer} ="


def test_kv_context_and_answer():
    for ex in _stream("kv", 3, 200):
        *lines, question = ex.prompt.split("\n")
        context = "".join(line + "\n" for line in lines)
        assert 100 - 12 <= len(context) <= 300  # the last line that fits may end a little short
        pairs = dict(line.split(": ") for line in lines)
        assert len(pairs) == len(lines)  # keys are unique
        key = question[len("get "):-len(": ")]
        assert pairs[key] == ex.answer and len(ex.answer) == 3


def test_kv_asks_for_far_keys_too():
    first = sum(ex.prompt.startswith(ex.prompt.split("get ")[-1]) for ex in _stream("kv", 4, 300))
    assert 0 < first < 60  # the first line (the farthest) is asked about roughly 1/12 to 1/37 of the time


def test_tokenizer_round_trip(tmp_path):
    char_tokenizer.save(tmp_path)
    ids = char_tokenizer.special_ids()
    (tmp_path / "config.json").write_text(json.dumps({"mask_token_id": ids["mask"], "eos_token_id": ids["eos"]}))
    tok = Tokenizer(tmp_path)
    assert tok.mask_token_id == ids["mask"] and tok.eos_token_id == ids["eos"]
    assert tok.vocab_size == len(char_tokenizer.ALPHABET) + len(char_tokenizer.SPECIALS)
    texts = [char_tokenizer.ALPHABET, "  two  spaces\n\nand newlines \n", *(e.prompt + e.answer
                                                                        for e in tasks.held_out_set(2))]
    for text in texts:
        enc = tok.encode(text)
        assert len(enc) == len(text)  # one token per character
        assert tok.decode(enc) == text
    assert tok.decode(tok.encode("12") + [ids["eos"], ids["mask"], ids["pad"]]) == "12"
