"""Fault isolation in Engine.step: a request whose step raises (in the batched forward, in its commit, in
its stop check) fails alone with an internal error; its neighbours finish with the reference tokens and
the engine keeps serving (float64 tiny models)."""

from __future__ import annotations

import pytest

from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams
from backend.oracle.reference import generate

MiB = 1 << 20
PROMPTS = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16, 17], [3, 1, 4, 1, 5]]
BAD = 2  # the request that carries the fault


class Boom(RuntimeError):
    pass


def _run(engine: Engine, params: list[SamplingParams]) -> dict[str, list]:
    """Submit every prompt, step to the end; {request id: [tokens, finish reason, error]}."""
    ids = [engine.add_request(p, sp) for p, sp in zip(PROMPTS, params, strict=True)]
    got = {i: [[], None, None] for i in ids}
    while engine.has_unfinished():
        for out in engine.step():
            got[out.request_id][0] += out.new_token_ids
            if out.finished:
                got[out.request_id][1:] = [out.finish_reason, out.error]
    assert engine.pool.allocator.num_used == 0 and not engine.pool.entries
    return {k: got[k] for k in ids}


def _check(tiny64, got: dict, params: list[SamplingParams], stage: str) -> None:
    results = list(got.values())
    assert results[BAD][1] == "error" and results[BAD][2].startswith(f"internal error in {stage}")
    for i, (tokens, reason, error) in enumerate(results):
        if i != BAD:
            assert error is None and reason in ("eos", "length")
            assert tokens == generate(tiny64, PROMPTS[i], params[i]).tokens, f"neighbour {i} changed"


def _params(refresh_interval=1) -> list[SamplingParams]:
    """Request i has seed i: the fault finds its request by seed (the engine resolves each request's
    parameters for the model family, so they are not the objects passed in)."""
    return [SamplingParams(max_tokens=16, block_length=4, refresh_interval=refresh_interval, seed=i)
            for i in range(len(PROMPTS))]


@pytest.mark.parametrize("refresh_interval", [1, None])
def test_a_request_that_breaks_the_forward_fails_alone(tiny64, refresh_interval):
    engine = Engine(tiny64, EngineConfig(kv_cache_bytes=4 * MiB))
    params = _params(refresh_interval)
    run = engine.runner.run
    calls = {"n": 0}

    def faulty(batch):
        calls["n"] += 1
        if any(r.params.seed == BAD for r, _ in batch) and calls["n"] > 2:  # after a few good steps
            raise Boom("a tensor the request built")
        return run(batch)

    engine.runner.run = faulty
    got = _run(engine, params)
    if refresh_interval == 1:
        _check(tiny64, got, params, "forward")
    else:  # default caching: compare with the same engine without the fault
        clean = _run(Engine(tiny64, EngineConfig(kv_cache_bytes=4 * MiB)), params)
        for i, (a, b) in enumerate(zip(got.values(), clean.values(), strict=True)):
            if i != BAD:
                assert a == b
        assert list(got.values())[BAD][1] == "error"
    # The engine keeps serving after the failure: same answer as a fresh engine's.
    engine.runner.run = run
    again = engine.generate([PROMPTS[0]], params[0])[0]
    fresh = Engine(tiny64, EngineConfig(kv_cache_bytes=4 * MiB)).generate([PROMPTS[0]], params[0])[0]
    assert again.token_ids == fresh.token_ids


def test_a_request_that_breaks_its_commit_fails_alone(tiny64):
    engine = Engine(tiny64, EngineConfig(kv_cache_bytes=4 * MiB))
    params = _params()
    original = type(engine).__dict__["_apply"]

    def apply(self, r, phase, res):
        if r.params.seed == BAD and r.forwards >= 2:
            raise Boom("commit")
        return original(self, r, phase, res)

    engine._apply = apply.__get__(engine)
    _check(tiny64, _run(engine, params), params, "commit")


def test_a_request_that_breaks_the_stop_checker_fails_alone(tiny64):
    engine = Engine(tiny64, EngineConfig(kv_cache_bytes=4 * MiB))
    params = _params()
    check = engine.stop_checker.check

    def faulty(prefix, p, streamed):
        if p.seed == BAD and len(prefix) >= 3:
            raise Boom("stop check")
        return check(prefix, p, streamed)

    engine.stop_checker.check = faulty
    _check(tiny64, _run(engine, params), params, "commit")
