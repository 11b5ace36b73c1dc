"""The cost model of one iteration: calibration from timed forwards recovers a known roofline, and the
refit from measured iterations (`fit`, what the engine's `refine` and benchmarks.fit_device run)
recovers a device's own model from the iterations it ran, exactly without noise and closely with it;
the engine refits only a calibrated model, and only to predict better."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams
from backend.engine.scheduling.cost_model import CostModel
from backend.engine.scheduling.cost_refit import IterationRecord, median_error, refine, refine_due
from backend.models import random_model
from benchmarks.fit_device import fit_device
from benchmarks.schedule_sim import H200_LLADA_8B, simulate
from benchmarks.workloads import WorkItem


@pytest.mark.parametrize("budget", [4096, 512, 64])
def test_calibration_recovers_a_roofline(budget):
    """From timed forwards of a machine whose iteration time is a known roofline, within any budget."""
    from backend.engine.scheduling.cost_model import calibrate, calibration_sizes

    true = CostModel(floor=6e-3, intercept=1e-3, per_token=2e-5, bandwidth=1e12)
    seen = []

    def time_forward(n):
        seen.append(n)
        return true.predict(min(n, budget))

    got = calibrate(time_forward, weight_bytes=16 * 10**9, sizes=calibration_sizes(budget))
    assert max(seen) <= budget and got.calibrated
    assert got.per_token == pytest.approx(true.per_token, rel=1e-6) or budget == 64
    for tokens in (8, 100, budget):
        assert got.predict(tokens) == pytest.approx(true.predict(tokens), rel=0.3)
    assert got.bandwidth == pytest.approx(16e9 / got.floor)


def test_calibration_takes_the_graph_floor_from_a_replay():
    """With CUDA graphs the floor of a replayed Reuse step is timed apart: it predicts graphed steps,
    eager ones keep the eager floor, and the compute line is the same for both."""
    from backend.engine.scheduling.cost_model import calibrate, calibration_sizes

    eager = CostModel(floor=18e-3, intercept=2e-3, per_token=2e-5, bandwidth=1e12)  # knee at 800 tokens
    got = calibrate(eager.predict, 16 * 10**9, calibration_sizes(16384), graph_time=lambda: 6e-3)
    assert got.graph_floor == pytest.approx(6e-3) and got.floor == pytest.approx(18e-3)
    assert got.predict(32, graphed=True) == pytest.approx(6e-3)
    assert got.predict(32) == pytest.approx(18e-3)
    assert got.predict(4096, graphed=True) == pytest.approx(got.predict(4096)) == pytest.approx(eager.predict(4096))
    assert got.bandwidth == pytest.approx(16e9 / 6e-3)
    assert calibrate(eager.predict, weight_bytes=1).graph_floor is None


def _modelled_iterations(device=H200_LLADA_8B) -> list[IterationRecord]:
    """A burst and a mix of prompt lengths under two policies, on the device model's clock: iterations
    on every piece (replayed graphs, eager floors, compute-bound bursts)."""
    rng = random.Random(5)
    burst = [WorkItem(0.0, 128, prompt_len=256) for _ in range(24)]
    mix = [WorkItem(0.4 * i, rng.choice([64, 128, 256]), prompt_len=rng.choice([64, 256, 1024, 2048]))
           for i in range(24)]
    out = []
    for items in (burst, mix):
        for policy in ("fcfs", "phase"):
            _, iters = simulate(policy, items, device, CostModel(), {"max_num_batched_tokens": 16384,
                                                                     "max_num_seqs": 128}, {"block_length": 32})
            out += iters
    return out


# The H200 model, and one whose attention over the cache costs time in proportion to it (~1.8 TB/s).
WITH_KV = dataclasses.replace(H200_LLADA_8B, cost=dataclasses.replace(H200_LLADA_8B.cost, reuse_per_token=2.45e-5,
                                                                      kv_per_byte=0.55e-12))


@pytest.mark.parametrize("device", [H200_LLADA_8B, WITH_KV], ids=["h200", "kv-term"])
def test_fit_recovers_the_device_model_from_its_iterations(device):
    records = _modelled_iterations(device)
    assert {r.graphed for r in records} == {True, False} and any(r.kv_bytes for r in records)
    start = dataclasses.replace(device, cost=CostModel())  # the CPU defaults: far from an H200
    fitted, report = fit_device(records, start)
    true, got = device.cost, fitted.cost
    for field in ("floor", "graph_floor", "intercept", "per_token", "reuse_per_token", "bandwidth"):
        assert getattr(got, field) == pytest.approx(getattr(true, field), rel=1e-6), field
    assert got.kv_per_byte == pytest.approx(true.kv_per_byte, abs=1e-18)
    assert fitted.host_per_request == pytest.approx(device.host_per_request) and fitted.host_base < 1e-12
    assert report["fit_error_pct"]["p95"] < 1e-6 and all(report["per_piece"].values())

    noise = random.Random(0)
    noisy = [dataclasses.replace(r, seconds=r.seconds * (1 + 0.05 * noise.gauss(0, 1))) for r in records]
    got = fit_device(noisy, start)[0].cost
    for field in ("floor", "graph_floor", "per_token", "reuse_per_token"):
        assert getattr(got, field) == pytest.approx(getattr(true, field), rel=0.03), field
    assert median_error(got, records) < 0.01  # against the noise-free times


def test_refine_only_takes_a_better_fit():
    records = _modelled_iterations()[:600]
    true = H200_LLADA_8B.cost
    assert refine(true, records) is true  # nothing predicts them better
    off = dataclasses.replace(true, per_token=2 * true.per_token, reuse_per_token=None, floor=9e-3)
    better = refine(off, records)
    assert median_error(better, records) < median_error(off, records)
    assert better.reuse_per_token == pytest.approx(true.reuse_per_token, rel=1e-6)
    assert refine(off, records[:7]) is off  # too few to fit
    # A refit whose Refresh rate strays more than 2x from the timed forwards' is not taken.
    assert refine(off, records, anchor=dataclasses.replace(true, per_token=5 * true.per_token)) is off
    assert refine(off, records, anchor=dataclasses.replace(true, per_token=1.5 * true.per_token)) is not off
    assert refine(off, [dataclasses.replace(r, seconds=0.0) for r in records[:20]]) is off  # nothing timed
    # A steady batch (one size of pure Reuse steps) places no intercept: the Reuse rate is fitted through
    # the current one.
    seconds = true.predict(reuse=512, graphed=True)
    steady = [IterationRecord(seconds, 0.0, 0, 512, 16, 0, True)] * 10
    got = refine(dataclasses.replace(true, reuse_per_token=None), steady)
    assert got.reuse_per_token == pytest.approx(true.reuse_per_token, rel=1e-9)
    assert got.intercept == true.intercept and got.per_token == true.per_token
    assert [n for n in range(1, 2049) if refine_due(n)] == [64, 128, 256, 512, 1024, 1536, 2048]


def test_engine_refines_a_calibrated_cost_model_and_keeps_a_fixed_one():
    """The engine refits a calibrated model from the iterations it measures (here its own calibration
    with a floor 1,000x off, so any honest fit is better), the scheduler sees the refit; a fixed model
    is never touched."""
    model = random_model("tiny-llada", dtype=torch.float32, seed=2)
    prompts = [[3 + i, 5, 7, 11] for i in range(3)]
    params = SamplingParams(max_tokens=72, block_length=8, ignore_eos=True)

    engine = Engine(model, EngineConfig(cost_model="calibrate", max_num_seqs=4))
    assert engine.cost.calibrated
    start = engine.scheduler.cost = dataclasses.replace(engine.cost, floor=1.0)
    engine.generate(prompts, params)
    log = list(engine.iteration_log)
    assert len(log) >= 64 and engine.refitter.refits >= 1
    assert engine.scheduler.cost is engine.cost and engine.cost.calibrated
    assert median_error(engine.cost, log) < median_error(start, log) / 100

    fixed = Engine(model, EngineConfig(cost_model="fixed", max_num_seqs=4))
    before = fixed.cost
    fixed.generate(prompts, params)
    assert fixed.cost is before and fixed.scheduler.cost is before and fixed.refitter.refits == 0


def test_a_failing_refit_keeps_the_engine_and_its_model(monkeypatch, caplog):
    """A refit is an optimisation: if it raises, the engine logs it, keeps the model it had, refits no
    more, and every request still gets its tokens (those of an engine whose model was never refitted)."""
    import backend.engine.scheduling.cost_refit

    model = random_model("tiny-llada", dtype=torch.float32, seed=2)
    prompts = [[3 + i, 5, 7, 11] for i in range(3)]
    params = SamplingParams(max_tokens=136, block_length=8, ignore_eos=True)  # > 128 iterations
    expected = [r.token_ids for r in Engine(model, EngineConfig(cost_model="fixed", max_num_seqs=4))
                .generate(prompts, params)]

    calls = []

    def broken(*args, **kw):
        calls.append(1)
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(backend.engine.scheduling.cost_refit, "refine", broken)
    engine = Engine(model, EngineConfig(cost_model="calibrate", max_num_seqs=4))
    before = engine.cost
    with caplog.at_level("ERROR", logger="backend.engine.scheduling.cost_refit"):
        got = engine.generate(prompts, params)
    assert [r.token_ids for r in got] == expected and all(r.finish_reason == "length" for r in got)
    assert len(engine.iteration_log) >= 128 and calls == [1]  # tried once (at 64), then never again
    assert engine.cost is before and engine.scheduler.cost is before and not engine.refitter.enabled
    assert "cost model refit failed" in caplog.text


def test_fit_host_recovers_a_base_and_a_cost_per_request():
    """Host work `base + per_request x requests` comes back from its records (and a falling line, which
    more requests cannot cause, becomes a flat one through the mean)."""
    from benchmarks.fit_device import fit_host

    rng = random.Random(6)
    sizes = [rng.randint(1, 64) for _ in range(50)]
    recs = [IterationRecord(0.01, 0.01, 0, 32, q, host_seconds=2e-4 + 4e-5 * q) for q in sizes]
    got = fit_host(recs, H200_LLADA_8B)
    assert got.host_base == pytest.approx(2e-4, rel=1e-6) and got.host_per_request == pytest.approx(4e-5, rel=1e-6)
    falling = [IterationRecord(0.01, 0.01, 0, 32, q, host_seconds=5e-3 - 5e-5 * q) for q in sizes]
    flat = fit_host(falling, H200_LLADA_8B)
    mean = sum(r.host_seconds for r in falling) / len(falling)
    assert flat.host_per_request == 0.0 and flat.host_base == pytest.approx(mean, rel=1e-9)
