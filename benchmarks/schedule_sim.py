"""Schedules on a device you do not have: the engine's own Scheduler and policies, a modelled clock.

Requests advance as the engine advances them (a Refresh rebuilds the cache, every step commits its
quota, the last block finishes the request; tokens are committed left to right, so a request's
first delta comes with its first step), and each iteration costs what a `DeviceModel` says that
device takes for the tokens it computes and the K/V it reads. The policy sees only its cost model,
as in the engine: `--cost calibrated` is what the engine's start-up calibration (timed eager
forwards, one graph replay) would fit on that device, `--cost exact` the device model itself.

    python -m benchmarks.schedule_sim                       # the GPU profile's workloads, H200 model
    python -m benchmarks.schedule_sim --workloads burst-64 --policies phase --json out.json

The figures are a model's, not a measurement: they say how policies compare and why, and where a
GPU run should look; `benchmarks/gpu_check.sh` and `benchmarks.engine --profile gpu` measure.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass

from backend.engine.kv.page_allocator import PageAllocator
from backend.engine.request import Batch, Phase, Request, Status
from backend.engine.sampling_params import SamplingParams
from backend.engine.scheduling.cost_model import CostModel, calibrate, calibration_sizes
from backend.engine.scheduling.cost_refit import IterationRecord, Refitter
from backend.engine.scheduling.policies import POLICIES
from backend.engine.scheduling.scheduler import Scheduler, SchedulerConfig
from benchmarks import workloads
from benchmarks.metrics import RequestRecord, iteration_stats, summarize
from benchmarks.profiles import PROFILES
from benchmarks.prompt_sources import SyntheticPrompts


@dataclass
class DeviceModel:
    """Iteration times on one device and model shape: the engine's cost model with the device's true
    values (`cost`: floors, the two token rates, K/V bandwidth; `backend.engine.scheduling.cost_model`), and the shape
    the schedule depends on. `cost.floor` is what launching an eager forward costs; a captured Reuse
    graph (pure Reuse, up to `graph_max_seqs` requests) pays only the weight read, `cost.graph_floor`."""
    name: str
    cost: CostModel
    graph_max_seqs: int
    kv_bytes_per_position: int
    weight_bytes: int
    pool_positions: int  # K/V positions the pool holds after weights and activations
    # The engine's host work around the forward (scheduling, commits, outputs): not GPU time, but
    # every iteration waits for it.
    host_base: float = 0.0
    host_per_request: float = 0.0

    def host(self, requests: int) -> float:
        return self.host_base + self.host_per_request * requests

    def graphed(self, refresh: int, reuse_requests: int) -> bool:
        """Whether the engine replays a captured graph for this iteration (pure Reuse, a captured size)."""
        return refresh == 0 and 0 < reuse_requests <= self.graph_max_seqs

    def iteration(self, refresh: int, reuse: int, kv_bytes: int, reuse_requests: int) -> float:
        return self.cost.predict(refresh, reuse, kv_bytes, self.graphed(refresh, reuse_requests))

    def calibrated_cost(self, max_tokens: int, graphs: bool = True) -> CostModel:
        """What the engine's start-up calibration fits here: timed eager forwards of n tokens and (with
        graphs) a replay of the one-request Reuse graph (32 rows, no cached K/V)."""
        graph_time = (lambda: self.iteration(0, 32, 0, 1)) if graphs else None
        return calibrate(lambda n: self.iteration(n, 0, 0, 0), self.weight_bytes, calibration_sizes(max_tokens),
                         graph_time=graph_time)

    def exact_cost(self) -> CostModel:
        """The device's own times (what calibration and refinement should reach)."""
        return self.cost


# LLaDA-8B shape in bf16 on an H200 (benchmarks/results/2026-11-26-h200-*): graph Reuse 6.09 / 16.1 /
# 59.1 ms at 1 / 16 / 64 requests of 32 rows (~400 cached positions each), an eager N=1 Reuse 18.7 ms,
# eager forwards ~21 us a token on the compute line, mixed 64-Reuse + 2,560-token Refresh iterations
# 110-121 ms (59 + 2,560 x 21 us = 113); the N=1 step (6.1 ms) is the floor: 16 GB of weights at
# ~4.8 TB/s (3.4 ms) plus what one graph replay of a small batch costs beyond. The attention over the
# cache (0.65 ps a byte, ~1.5 TB/s) is what longctx-64 (1,800-token prompts: 62 GB of cache a step)
# needs to reach its measured 178 ms p50 iteration (without it: 144 ms); a Reuse row is the rest of
# the 16-to-64 slope (23.7 us). Host work: the bursts of 64 kept the model busy 96.3-97.8% of their
# wall time, 28-49 us per request per iteration outside the forward (40 here). A GPU run's recorded
# iterations refit all of it (benchmarks.fit_device).
H200_LLADA_8B = DeviceModel("h200-llada-8b", CostModel(floor=18.0e-3, intercept=1.8e-3, per_token=2.1e-5,
                                                       reuse_per_token=2.37e-5, kv_per_byte=0.65e-12,
                                                       bandwidth=4.0e12, graph_floor=5.8e-3, calibrated=True),
                            graph_max_seqs=128, kv_bytes_per_position=32 * 2 * 32 * 128 * 2,
                            weight_bytes=16 * 10**9, pool_positions=200_000, host_per_request=40e-6)
DEVICES = {d.name: d for d in (H200_LLADA_8B,)}


def load_device(name_or_path: str) -> DeviceModel:
    """A named device model, or one written by `benchmarks.fit_device --out`."""
    if name_or_path in DEVICES:
        return DEVICES[name_or_path]
    try:
        with open(name_or_path) as f:
            d = json.load(f)["device"]
        return DeviceModel(**{**d, "cost": CostModel(**d["cost"])})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"device: {name_or_path!r} is neither a known device model {sorted(DEVICES)} "
                         f"nor a fit_device JSON ({e})") from e


def advance(s: Scheduler, batch: Batch) -> list[Request]:
    """What the engine does after a forward: a Refresh leaves a cache, each request commits its quota
    (left to right), the last block finishes it. Returns the requests that finished."""
    done = []
    for r, phase in batch:
        if phase == Phase.REFRESH and (s.cache is None or s.cache.holds(r.request_id) or r.cached_slots == 0):
            r.cached_block = r.block
        masked = r.masked_positions()
        n = r.quota() or len(masked)
        r.commit(masked[:n], [1] * n)
        r.forwards += 1
        if r.all_blocks_done:
            s.remove(r)
            r.status = Status.FINISHED
            done.append(r)
    return done


def simulate(policy: str, items: list[workloads.WorkItem], device: DeviceModel, cost: CostModel,
             engine: dict, sampling: dict, **policy_settings) -> tuple[list[RequestRecord], list[IterationRecord]]:
    """Run `items` to completion; `policy_settings` override SchedulerConfig fields (refresh_spread, ...)."""
    cfg = SchedulerConfig(engine.get("max_num_batched_tokens", 16384), engine.get("max_num_seqs", 128), policy,
                          **{k: v for k, v in policy_settings.items() if v is not None})
    page = 16
    s = Scheduler(cfg, PageAllocator(device.pool_positions // page, page), cost, device.kv_bytes_per_position)
    pending = sorted(enumerate(items), key=lambda x: (x[1].arrival, x[0]))
    records, by_id, iters, now = [], {}, [], 0.0
    refitter = Refitter()
    while pending or s.has_work():
        while pending and pending[0][1].arrival <= now:
            i, it = pending.pop(0)
            params = SamplingParams(max_tokens=it.max_tokens, **{"ignore_eos": True, **sampling})
            r = Request(str(i), [2] * it.prompt_len, params, mask_token_id=0)
            s.add(r)
            by_id[r.request_id] = RequestRecord(i, it.kind, it.arrival, it.prompt_len)
            records.append(by_id[r.request_id])
        batch = s.schedule()
        if not batch:
            now = max(now, pending[0][1].arrival)
            continue
        refresh = sum(r.refresh_cost for r, ph in batch if ph == Phase.REFRESH)
        reuse = [r for r, ph in batch if ph == Phase.REUSE]
        kv = sum(s.kv_bytes_read(r) for r in reuse)
        reuse_tokens = sum(r.reuse_cost for r in reuse)
        seconds = device.iteration(refresh, reuse_tokens, kv, len(reuse))
        graphed = device.graphed(refresh, len(reuse))
        predicted = cost.predict(refresh, reuse_tokens, kv, graphed)
        host = device.host(len(batch))
        iters.append(IterationRecord(seconds, predicted, refresh, reuse_tokens, len(batch), kv, graphed, host))
        cost = s.cost = refitter.observe(cost, iters[-1])  # as the engine refits its cost model
        now += seconds + host
        finished = advance(s, batch)
        for r, _ in batch:  # tokens commit left to right: every step streams a delta
            by_id[r.request_id].delta(now)
        for r in finished:
            rec = by_id[r.request_id]
            rec.finish, rec.output_tokens, rec.forwards = now, r.params.max_tokens, r.forwards
            rec.finish_reason = "length"
    return records, iters


def scenarios(profile: dict, names: list[str] | None, rates: list[float] | None,
              n: int | None = None) -> list[tuple[str, dict]]:
    """(name, workload spec) of the profile's scenarios; a rate sweep becomes one entry per rate."""
    out = []
    for sc in profile["scenarios"]:
        spec = {**sc["workload"], **({"n": n} if n else {})}
        if names and spec["name"] not in names:
            continue
        sweep = rates if rates and spec.get("arrival") == "poisson" else sc.get("rates")
        if not sweep:
            out.append((spec["name"], spec))
        else:
            out += [(f"{spec['name']}@{r:g}", workloads.with_rate(spec, r)) for r in sweep]
    return out


def run(profile_name: str, device: DeviceModel, cost_mode: str, policies: list[str], names: list[str] | None,
        rates: list[float] | None = None, n: int | None = None, **policy_settings) -> list[dict]:
    prof = PROFILES[profile_name]
    engine, sampling = prof["engine"], dict(prof.get("sampling", {}))
    budget = engine.get("max_num_batched_tokens", 16384)
    cost = {"exact": device.exact_cost, "calibrated": lambda: device.calibrated_cost(budget),
            "eager": lambda: device.calibrated_cost(budget, graphs=False)}[cost_mode]()
    source = SyntheticPrompts(1000, [])
    rows = []
    for name, spec in scenarios(prof, names, rates, n):
        wl = workloads.build(spec, source, prof.get("gen_multiple", 1))
        for policy in policies:
            records, iters = simulate(policy, wl.items, device, cost, engine, sampling, **policy_settings)
            summary = summarize(records)
            rows.append({"workload": name, "policy": policy, "cost": cost_mode, **summary, **iteration_stats(iters)})
    return rows


def table(rows: list[dict]) -> str:
    head = ("| workload | policy | tok/s | lat p50 s | lat p95 s | lat p99 s | TTFD p95 s | ITL p99 ms | "
            "iter p50 ms | iter max ms | max/median | model err % |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lat, ttfd, it = r["latency_s"], r["ttfd_s"], r["iteration_ms"]
        lines.append(f"| {r['workload']} | {r['policy']} | {r['throughput_tok_s']:.1f} | {lat['p50']:.2f} | "
                     f"{lat['p95']:.2f} | {lat['p99']:.2f} | {ttfd['p95']:.2f} | {r['itl_s']['p99'] * 1e3:.1f} | "
                     f"{it['p50']:.1f} | {it['max']:.1f} | {r['iteration_spread']:.2f} | "
                     f"{r['cost_model_error_pct']:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="gpu", choices=sorted(PROFILES))
    ap.add_argument("--device", default=H200_LLADA_8B.name,
                    help=f"a device model ({', '.join(sorted(DEVICES))}) or a JSON from benchmarks.fit_device")
    ap.add_argument("--cost", default="calibrated", choices=["calibrated", "eager", "exact"],
                    help="the policy's cost model: the engine's calibration, the same without the graph floor "
                         "(the engine before it timed graph replays), or the device model itself")
    ap.add_argument("--policies", default="fcfs,phase,static")
    ap.add_argument("--workloads", default="burst-16,burst-64,mixed,mixed-sat,longout,poisson")
    ap.add_argument("--rates", default=None, help="Poisson rates (comma-separated) instead of each scenario's")
    ap.add_argument("--n", type=int, default=None, help="requests per workload (default: each scenario's)")
    ap.add_argument("--spread", type=float, default=None, help="refresh_spread (default: the scheduler's)")
    ap.add_argument("--max-refresh-wait", type=int, default=None, help="max_refresh_wait (default: the scheduler's)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    a = ap.parse_args(argv)
    policies = a.policies.split(",")
    if unknown := set(policies) - set(POLICIES):
        ap.error(f"--policies: unknown {sorted(unknown)}; known: {sorted(POLICIES)}")
    rates = [float(x) for x in a.rates.split(",")] if a.rates else None
    try:
        device = load_device(a.device)
    except ValueError as e:
        ap.error(str(e))
    rows = run(a.profile, device, a.cost, policies, a.workloads.split(","), rates, a.n,
               refresh_spread=a.spread, max_refresh_wait=a.max_refresh_wait)
    print(f"Modelled schedules: profile {a.profile}, device model {device.name}, policy cost model {a.cost}")
    print(table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": asdict(device), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
