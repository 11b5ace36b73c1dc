"""The trainer: example stream, curriculum, a short real run (loss falls, checkpoint loads, repeatable)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.models.loader import load_model
from backend.oracle.evaluate import main as evaluate_main
from backend.training import tasks
from backend.training.data import Curriculum, prefetch, stream
from backend.training.train import TrainConfig, train

SIZES = {"add": 3, "sort": 2, "kv": 2}
GROUPS = [["add", "sort"], ["kv"]]


def _steps(batches):
    return [(b.step, b.groups) for b in batches]


def test_stream_is_the_same_in_worker_processes():
    cur = Curriculum(steps=9)
    alone = _steps(stream(5, SIZES, GROUPS, cur, 32))
    assert [s for s, _ in alone] == list(range(9))
    assert _steps(prefetch(2, 5, SIZES, GROUPS, cur, 32)) == alone
    assert _steps(stream(6, SIZES, GROUPS, cur, 32)) != alone


def test_stream_groups_and_pads_answers_with_eos():
    batch = next(stream(0, SIZES, GROUPS, Curriculum(steps=1), 32))
    assert [len(g) for g in batch.groups] == [5, 2]
    assert [t for t, _, _ in batch.groups[0]] == ["add"] * 3 + ["sort"] * 2
    eos = 46
    for _, prompt, answer in batch.groups[0] + batch.groups[1]:
        assert len(answer) == 32 and answer[-1] == eos and prompt


def test_varied_answer_lengths_per_micro_batch():
    """--gen-lengths: each micro-batch pads to one drawn length (never shorter than its longest
    answer + EOS), the same in worker processes, and every listed length occurs."""
    cur, lengths = Curriculum(steps=30), (4, 16, 64)
    alone = _steps(stream(1, SIZES, GROUPS, cur, 32, gen_lengths=lengths))
    assert _steps(prefetch(2, 1, SIZES, GROUPS, cur, 32, gen_lengths=lengths)) == alone
    seen = set()
    for _, groups in alone:
        for group in groups:
            sizes = {len(a) for _, _, a in group}
            assert len(sizes) == 1
            size = sizes.pop()
            longest = max(sum(1 for t in a if t != 46) for _, _, a in group)  # answers hold no EOS (46)
            assert size >= longest + 1 and (size in lengths or size == longest + 1)
            seen.add(size)
    assert {16, 64} <= seen


def test_curriculum_grows_to_the_full_task_lengths():
    cur = Curriculum(steps=100, ramp=0.5, kv_start=40, kv_min_chars=8, kv_ramp=0.8)
    full = tasks.TaskConfig()
    start, mid, end = cur.at(0), cur.at(50), cur.at(99)
    assert start.kv_context_chars == (8, 40) and start.add_max_digits == 2
    assert mid.add_max_digits == full.add_max_digits and mid.string_length == full.string_length
    assert 40 < mid.kv_context_chars[1] < full.kv_context_chars[1]  # its own, slower ramp
    assert end.kv_context_chars == (8, full.kv_context_chars[1])


def _tiny(tmp_path, name, **kw):
    base = dict(out=str(tmp_path / name), steps=30, batch="add=6,copy=6,kv=4", micro_batches="add+copy,kv",
                hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, warmup_steps=5, lr=3e-3,
                log_every=10, save_every=30, threads=1, data_workers=0, bf16=False, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def test_short_run_learns_saves_a_loadable_checkpoint_and_repeats(tmp_path, capsys):
    state = train(_tiny(tmp_path, "a"))
    log = capsys.readouterr().out
    losses = [float(line.split(" loss ")[1].split()[0]) for line in log.splitlines() if line.startswith("step ")]
    assert len(losses) == 3 and losses[-1] < 0.5 * losses[0]
    assert state["step"] == 30 and json.loads((tmp_path / "a" / "training_state.json").read_text())["step"] == 30
    model = load_model(tmp_path / "a", dtype=torch.float32)
    assert model.config.num_layers == 2 and model.config.vocab_size == 49
    # Same seed: the same run, whether examples are made here or in a worker process.
    again = train(_tiny(tmp_path, "b", data_workers=1))
    assert again["final_loss"] == state["final_loss"]
    other = load_model(tmp_path / "b", dtype=torch.float32)
    for (name, p), q in zip(model.named_parameters(), other.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_continue_from_a_checkpoint(tmp_path):
    train(_tiny(tmp_path, "a", steps=10, save_every=10))
    cont = train(_tiny(tmp_path, "b", steps=10, save_every=10, init_from=str(tmp_path / "a"), seed=1))
    assert cont["step"] == 10
    with pytest.raises(ValueError, match="init_from"):
        train(_tiny(tmp_path, "c", steps=10, init_from=str(tmp_path / "a"), num_layers=3))


def test_block_diffusion_run_from_a_llada_checkpoint_serves_as_sdar(tmp_path):
    """--arch sdar: the LLaDA model converted, trained with the block objective, saved in SDAR's
    format (no generation_config.json: the family's official decoding applies) and served by the engine."""
    train(_tiny(tmp_path, "llada", steps=5, save_every=5))
    state = train(_tiny(tmp_path, "sdar", steps=20, save_every=20, arch="sdar", block_size=4,
                        init_from=str(tmp_path / "llada")))
    assert state["step"] == 20 and state["final_loss"] > 0
    config = json.loads((tmp_path / "sdar" / "config.json").read_text())
    assert config["architectures"] == ["SDARForCausalLM"] and config["block_size"] == 4
    assert not (tmp_path / "sdar" / "generation_config.json").exists()
    engine = Engine.from_config(EngineConfig(model=str(tmp_path / "sdar"), dtype="float32", device="cpu"))
    assert engine.model_config.arch == "sdar"
    [out] = engine.generate([engine.tokenizer.encode("sort cba =")], [engine.make_params({"max_tokens": 8})])
    assert out.finish_reason in ("eos", "length")
    # The offline evaluation (what the training sweep scores with) decodes it with SDAR's official loop.
    report = evaluate_main(["--model", str(tmp_path / "sdar"), "--per-task", "1", "--threads", "1"])
    assert report["params"]["block_length"] == 4 and report["params"]["remasking"] == "low_confidence_dynamic"
    cont = train(_tiny(tmp_path, "sdar2", steps=5, save_every=5, arch="sdar", init_from=str(tmp_path / "sdar")))
    assert cont["step"] == 5


@pytest.mark.parametrize("field,value", [("micro_batches", "add,kv"), ("batch", "add=2,nope=3"),
                                         ("device", "cuda:7")])
def test_bad_settings_name_the_field(tmp_path, field, value):
    if field == "device" and torch.cuda.is_available():
        pytest.skip("a CUDA machine may have that device")
    with pytest.raises(ValueError, match=field):
        train(_tiny(tmp_path, "x", **{field: value}))


def test_interrupt_saves_the_last_finished_step(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-u", "-m", "backend.training.train", "--out", str(out), "--steps", "100000",
            "--batch", "add=2,kv=2", "--micro-batches", "add,kv", "--hidden-size", "32", "--num-layers", "1",
            "--num-heads", "2", "--intermediate-size", "32", "--log-every", "2", "--save-every", "1000000",
            "--threads", "1", "--data-workers", "1", "--no-bf16", "--device", "cpu"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for line in proc.stdout:
            if line.startswith("step 4/"):
                break
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=180)[0]  # generous: CI machines can be busy
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, rest
    assert "interrupted: saving" in rest
    state = json.loads((out / "training_state.json").read_text())
    assert state["interrupted"] and state["step"] >= 4
    assert load_model(out, dtype=torch.float32).config.num_layers == 1


def test_sweep_plans_trains_scores_and_packs(tmp_path):
    import tarfile

    from backend.training import sweep

    common = ("--batch add=2,kv=2 --micro-batches add,kv --hidden-size 32 --num-layers 1 --num-heads 2 "
              "--intermediate-size 32 --threads 1 --data-workers 0 --warmup-steps 5 --no-bf16")
    summary = sweep.main(["--out", str(tmp_path / "w"), "--minutes", "0.1", "--calibrate-seconds", "6",
                          "--device", "cpu", "--per-task", "1", "--pack", str(tmp_path / "pack"),
                          "--common", common, "--run", "a=--lr 3e-3"])
    run = summary["a"]
    state = json.loads((tmp_path / "w" / "a" / "training_state.json").read_text())
    assert run["steps"] == state["step"] > 0
    # Either the calibrated plan (whole hundreds) ran to its end, or the deadline stopped it with a save.
    assert state["config"]["steps"] % 100 == 0
    assert state["step"] == state["config"]["steps"] or state["interrupted"]
    assert set(run["tasks"]) == set(tasks.TASKS) and run["overall"] is not None
    assert not (tmp_path / "w" / "a.cal").exists()  # calibration leaves no checkpoint behind
    with tarfile.open(tmp_path / "pack" / "a.tar") as tar:
        assert {"a/model.safetensors", "a/eval.json", "a/training_state.json"} <= set(tar.getnames())
    with tarfile.open(tmp_path / "pack" / "logs.tar") as tar:
        assert {"a.train.log", "a.calibrate.log", "summary.json"} <= set(tar.getnames())


def test_semi_autoregressive_states_mask_the_tail_and_keep_the_prefix():
    from backend.training.objective import masks_and_weights
    eos = 46
    answers = torch.tensor([[1, 2, 3] + [eos] * 61, [4] * 20 + [eos] * 44])
    t = torch.tensor([0.5, 0.25])
    plain, w = masks_and_weights(answers, t, torch.Generator().manual_seed(0), 0.0, (16, 32), eos)
    again = torch.rand(2, 64, generator=torch.Generator().manual_seed(0)) < t[:, None]
    assert torch.equal(plain, again) and torch.equal(w[1], torch.full((64,), 4.0))  # LLaDA's SFT unchanged
    for seed in range(20):
        masked, weight = masks_and_weights(answers, t, torch.Generator().manual_seed(seed), 1.0, (16, 32), eos)
        for row in range(2):
            first_eos = int((answers[row] == eos).nonzero()[0])
            # Some block of 16 or 32 up to the EOS's: clean before it, 1/t inside, masked with weight 1 after.
            fits = [(lo, lo + size) for size in (16, 32) for lo in range(0, first_eos + 1, size)
                    if lo <= first_eos < 64 and not masked[row, :lo].any() and masked[row, lo + size:].all()
                    and (weight[row, lo + size:] == 1.0).all() and (weight[row, lo:lo + size] == 1 / t[row]).all()]
            assert fits, (seed, row)
