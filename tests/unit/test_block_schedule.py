"""The phase policy with block-diffusion requests, tensor-free (the cost model is the clock):
prefill chunks and finished-block writes are Refresh work, denoising steps are Reuse work. Every ready
denoising step runs in every iteration (a prefill never holds one back), Refresh work beyond the paced
allowance only rides while the iteration stays memory-bound (the policy's target) or is the lone head
of a long queue, long prompts are prefilled in chunks of whole blocks, and nobody starves."""

from __future__ import annotations

import torch

from backend.engine.block_params import SDARParams
from backend.engine.block_request import BlockRequest
from backend.engine.kv.page_allocator import PageAllocator
from backend.engine.request import Phase, Status
from backend.engine.scheduling.scheduler import Scheduler, SchedulerConfig
from tests.unit.test_phase_policy import COST, MAX_WAIT

BUDGET = 2048


def _request(i: int, prompt: int, gen: int) -> BlockRequest:
    p = SDARParams(max_tokens=gen, block_length=4, denoising_steps=2, remasking="low_confidence_static",
                   ignore_eos=True)
    return BlockRequest(str(i), [1] * prompt, p, mask_token_id=0, logit_shift=0, chunk=BUDGET // 2 // 4 * 4)


def _check(s: Scheduler, batch, ready, candidates) -> None:
    reuse = [r for r, ph in batch if ph == Phase.REUSE]
    refresh = [r for r, ph in batch if ph == Phase.REFRESH]
    assert {id(r) for r in reuse} == {id(r) for r in ready}  # every ready denoising step runs
    if reuse and refresh:  # compute steps never stretch the denoising steps' iteration past the target
        reuse_tokens = sum(r.reuse_cost for r in reuse)
        kv = sum(r.cached_slots for r in reuse) * s.kv_bytes_per_position
        limit = max(s.policy.last_target, (1 + s.cfg.refresh_slice) * COST.predict(reuse=reuse_tokens, kv_bytes=kv))
        tokens = sum(r.refresh_cost for r in refresh)
        assert COST.predict(tokens, reuse_tokens, kv) <= limit * (1 + 1e-9) or (
            len(refresh) == 1 and tokens <= 2 * refresh[0].params.block_length)
    if candidates and (candidates[0].status == Status.RUNNING or len(s.running) < s.cfg.max_num_seqs):
        assert candidates[0].refresh_wait <= MAX_WAIT  # the oldest pending compute step waits boundedly


def _advance(s: Scheduler, batch) -> None:
    """What the engine does after the forward: stores and commits (the most confident rows first)."""
    for r, _ in batch:
        plan = r.plan()
        n = len(plan.decode)
        r.apply(plan, [7] * n, torch.linspace(1.0, 0.5, n, dtype=torch.float64))
        r.forwards += 1
        if r.all_blocks_done:
            s.remove(r)
            r.status = Status.FINISHED


def test_prefill_chunks_multiplex_with_denoising_steps():
    s = Scheduler(SchedulerConfig(BUDGET, 64, "phase", 0.1, MAX_WAIT), PageAllocator(100000, 16), COST,
                  kv_bytes_per_position=1024)
    short = [_request(i, 20, 64) for i in range(24)]
    long = [_request(100 + i, 3000, 16) for i in range(4)]
    arrivals = {i: [r] for i, r in enumerate(short)}
    for k, r in enumerate(long):
        arrivals.setdefault(10 * (k + 1), []).append(r)
    chunks: dict[str, list[int]] = {}
    it = 0
    while arrivals or s.has_work():
        for r in arrivals.pop(it, []):
            s.add(r)
        ready = [r for r in s.running if not r.needs_refresh]
        before = sorted([r for r in s.running if r.needs_refresh] + list(s.waiting), key=lambda x: x.order)
        batch = s.schedule()
        _check(s, batch, ready, before)
        for r, ph in batch:
            if ph == Phase.REFRESH and r.prompt_len == 3000 and r.cached_upto < 3000 // 4 * 4:
                chunks.setdefault(r.request_id, []).append(r.refresh_cost)
        assert sum(r.refresh_cost if ph == Phase.REFRESH else r.reuse_cost for r, ph in batch) <= BUDGET
        _advance(s, batch)
        it += 1
        assert it < 5000, "the schedule does not finish"
    assert [r.request_id for r in short + long if r.status != Status.FINISHED] == []
    for r in long:  # 3000 prompt tokens in chunks of at most 1024, whole blocks
        sizes = chunks[r.request_id]
        assert len(sizes) >= 3 and max(sizes) <= BUDGET // 2 and all(c % 4 == 0 for c in sizes[:-1])
