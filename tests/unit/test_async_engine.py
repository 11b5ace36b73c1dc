"""The thread-safe front: concurrent submitters, streaming order, abort, validation, shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from backend.engine.async_engine import AsyncEngine, EngineDead
from backend.engine.config import EngineConfig
from backend.engine.engine import Engine
from backend.engine.sampling_params import SamplingParams
from backend.models import random_model

SP = SamplingParams(max_tokens=16, block_length=4, ignore_eos=True)


@pytest.fixture
def model():
    return random_model("tiny-llada", dtype=torch.float64, seed=2)


def _engine(model):
    return Engine(model, EngineConfig(kv_cache_bytes=1 << 20))


def test_concurrent_streams_match_offline_generate(model):
    prompts = [[i + 1, i + 2, i + 3][: 1 + i % 3] for i in range(10)]
    expected = _engine(model).generate(prompts, SP)
    front = AsyncEngine(_engine(model)).start()
    got = [None] * len(prompts)

    def client(i):
        outs = list(front.submit(prompts[i], SP))
        got[i] = outs

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    front.shutdown()
    for outs, exp in zip(got, expected, strict=True):
        assert [t for o in outs for t in o.new_token_ids] == exp.token_ids
        assert outs[-1].finished and outs[-1].finish_reason == "length"
        assert not any(o.finished for o in outs[:-1])
        assert outs[-1].num_output_tokens == 16
    assert front.stats()["kv_pages_used"] == 0


def test_abort_mid_stream_frees_pages(model):
    front = AsyncEngine(_engine(model)).start()
    stream = front.submit([1, 2, 3], SamplingParams(max_tokens=64, block_length=4, ignore_eos=True))
    first = stream.get(timeout=30)
    assert not first.finished
    front.abort(stream.request_id)
    outs = [first, *stream]
    assert outs[-1].finished and outs[-1].finish_reason == "abort"
    assert sum(len(o.new_token_ids) for o in outs) < 64
    other = list(front.submit([4, 5], SP))  # the engine keeps serving
    assert other[-1].finish_reason == "length"
    assert front.stats()["kv_pages_used"] == 0
    front.shutdown()


def test_validation_errors_are_raised_in_the_caller(model):
    front = AsyncEngine(_engine(model)).start()
    with pytest.raises(ValueError, match="^prompt:"):
        front.submit([], SP)
    with pytest.raises(ValueError, match="^max_tokens:"):
        front.submit([1] * 500, SP)
    assert list(front.submit([1], SP))[-1].finished
    front.shutdown()


def test_callbacks_and_a_broken_consumer(model):
    front = AsyncEngine(_engine(model)).start()
    done = threading.Event()
    seen = []

    def broken(out):
        raise RuntimeError("consumer bug")

    def good(out):
        seen.append(out)
        if out.finished:
            done.set()

    front.submit([1, 2], SP, on_output=broken)
    front.submit([3, 4], SP, on_output=good)
    assert done.wait(60)
    assert seen[-1].finish_reason == "length"
    front.shutdown()


def test_async_iteration_and_shutdown_aborts_pending(model):
    front = AsyncEngine(_engine(model)).start()

    async def collect():
        return [o async for o in front.submit([7, 8, 9], SP)]

    outs = asyncio.run(collect())
    assert outs[-1].finished
    pending = front.submit([1, 2, 3], SamplingParams(max_tokens=256, block_length=4, ignore_eos=True))
    front.shutdown()
    assert list(pending)[-1].finish_reason == "abort"


def test_a_dying_loop_fails_every_request_and_refuses_new_ones(model):
    # Fault injection: an exception escapes Engine.step (the engine isolates request failures
    # itself; this is the loop's last line of defence). Nobody may be left waiting.
    engine = _engine(model)
    real_step, steps = engine.step, []

    def failing_step():
        steps.append(1)
        if len(steps) == 3:
            raise IndexError("list index out of range")
        return real_step()

    engine.step = failing_step
    front = AsyncEngine(engine).start()
    streams = [front.submit([1, 2, 3], SP) for _ in range(3)]
    finals = [[o for o in s if o.finished][-1] for s in streams]  # each iteration ends with the final one
    assert all(o.finish_reason == "error" and "IndexError" in o.error for o in finals)
    assert front.dead == "IndexError: list index out of range"
    with pytest.raises(EngineDead, match="engine has stopped"):
        front.submit([1, 2, 3], SP)
    assert front.shutdown(timeout=5)
