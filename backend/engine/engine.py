"""The continuous-batching diffusion engine: schedule, run, commit; one iteration per `step()`."""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from pathlib import Path

import torch

from backend.engine.block_params import params_for_model
from backend.engine.block_request import BlockRequest
from backend.engine.config import EngineConfig, MiB
from backend.engine.denoise import select_commits
from backend.engine.device_setup import capture_graphs, cost_model_for
from backend.engine.kv.pool import KVPool
from backend.engine.outputs import GenerationResult, RequestOutput
from backend.engine.request import Phase, Request, Status
from backend.engine.runner import fused_layers
from backend.engine.runner.block_runner import BlockRunner
from backend.engine.runner.model_runner import ModelRunner
from backend.engine.sampling_params import SamplingParams, checkpoint_defaults
from backend.engine.scheduling.cost_model import CostModel
from backend.engine.scheduling.cost_refit import IterationRecord, Refitter
from backend.engine.scheduling.scheduler import Scheduler
from backend.engine.stop_checker import StopChecker
from backend.models import DiffusionLM, default_dtype, random_model
from backend.models.loader import load_model
from backend.models.model_config import PRESETS
from backend.models.tokenizer import Tokenizer

CPU_KV_BYTES = 256 * MiB
log = logging.getLogger(__name__)


class Engine:
    def __init__(self, model: DiffusionLM, config: EngineConfig | None = None, tokenizer: Tokenizer | None = None,
                 default_params: dict | None = None, kv_cache_bytes: int | None = None):
        self.model = model
        self.config = config or EngineConfig()
        self.tokenizer = tokenizer
        self.model_config = model.config
        self.default_params = {**(default_params or {}), "sparse_retention": self.config.sparse_retention,
                               **self.config.default_sampling}
        self.make_params({})  # fail at start-up, not at the first request, on bad defaults
        kv_bytes = kv_cache_bytes or self.config.kv_cache_bytes or CPU_KV_BYTES
        pages = KVPool.pages_for_budget(model.config, kv_bytes, self.config.page_size, model.dtype)
        if pages < 1:
            raise ValueError(f"kv_cache_bytes: {kv_bytes} bytes hold no page of {self.config.page_size} slots")
        self.pool = KVPool(model.config, pages, self.config.page_size, model.dtype, model.device,
                           max_requests=self.config.max_num_seqs)
        # CUDA: Triton kernels for the layers and the attention over the pool (a model shared between
        # engines gets exactly this engine's choice).
        self.uses_kernels = fused_layers.install(model) if self.config.cuda_kernels else fused_layers.uninstall(model)
        block = model.config.block_causal  # SDAR / Fast-dLLM v2: the exact block cache (block_request.py)
        graphs = None if block or not self.uses_kernels or self.config.enforce_eager else capture_graphs(
            model, self.pool, self.config)
        cost = cost_model_for(model, self.config, graphs)  # after kernels and graphs: it times what will run
        self.scheduler = Scheduler(self.config.scheduler_config(), self.pool, cost,
                                   model.config.kv_bytes_per_token(self.pool.k[0].element_size()))
        budget = self.config.logit_budget_bytes
        self.runner = BlockRunner(model, self.pool, budget, self.uses_kernels) if block else ModelRunner(
            model, self.pool, budget, graphs, self.uses_kernels, self.config.sparse_window)
        self.stop_checker = StopChecker(tokenizer, model.config.stop_token_ids if tokenizer is None
                                        else sorted(set(model.config.stop_token_ids) | set(tokenizer.stop_token_ids)))
        self.requests: dict[str, Request] = {}
        self._pending: list[RequestOutput] = []
        self._ids = itertools.count()
        self.stats = {"iterations": 0, "forwards": 0, "refresh_rows": 0, "reuse_rows": 0, "committed": 0,
                      "failed": 0}
        # The latest iterations (time, predicted time, Refresh / Reuse tokens): metrics and benchmarks.
        self.iteration_log: deque[IterationRecord] = deque(maxlen=4096)
        # Refits a calibrated cost model to the measured iterations (the log above is drained by the
        # async engine).
        self.refitter = Refitter()

    @property
    def cost(self) -> CostModel:
        """The cost model the scheduler plans with (its one holder; refits replace it there)."""
        return self.scheduler.cost

    # --- construction ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: EngineConfig) -> Engine:
        device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = getattr(torch, cfg.dtype) if cfg.dtype else default_dtype(device)
        if cfg.model in PRESETS:
            model, tokenizer, defaults = random_model(cfg.model, dtype, device, cfg.seed), None, {}
        else:
            path = Path(cfg.model)
            model = load_model(path, dtype, device)
            tok_dir = Path(cfg.tokenizer) if cfg.tokenizer else path
            tokenizer = Tokenizer(tok_dir) if (tok_dir / "tokenizer.json").is_file() or (
                tok_dir / "vocab.json").is_file() else None
            # The block-diffusion loops take their settings as arguments, not from generation_config.json
            # (Qwen3's there, top_k 20 with top_p 0.95, is not what block_diffusion_generate decodes with).
            defaults = {} if model.config.block_causal else checkpoint_defaults(path)
        kv_bytes = cfg.kv_cache_bytes
        if kv_bytes is None and device.type == "cuda":
            from backend.engine.runner.memory_profile import kv_budget_after_profiling

            kv_bytes = kv_budget_after_profiling(model, cfg)
        return cls(model, cfg, tokenizer, defaults, kv_bytes)

    # --- requests -------------------------------------------------------------------------------
    def make_params(self, values: dict | None = None) -> SamplingParams:
        return params_for_model(self.model_config, values, self.default_params)

    def validate(self, prompt_ids: list[int], params: SamplingParams) -> Request:
        """A request for these inputs, or a ValueError naming the field. Touches no engine state."""
        cfg = self.model_config
        if not prompt_ids:
            raise ValueError("prompt: is empty (at least one token is needed)")
        if len(prompt_ids) >= cfg.max_sequence_length:
            raise ValueError(f"prompt: {len(prompt_ids)} tokens leave no room for generation in the model's context "
                             f"of {cfg.max_sequence_length} positions")
        if cfg.mask_token_id in prompt_ids:
            raise ValueError("prompt: holds the mask token, which no prompt may contain")
        if any(not isinstance(t, int) or not 0 <= t < cfg.vocab_size for t in prompt_ids):
            raise ValueError(f"prompt: token ids must be integers in [0, {cfg.vocab_size})")
        if len(prompt_ids) + params.max_tokens > cfg.max_sequence_length:
            raise ValueError(f"max_tokens: prompt ({len(prompt_ids)} tokens) + max_tokens ({params.max_tokens}) exceed "
                             f"the model's context of {cfg.max_sequence_length} positions")
        params = params.for_family(cfg.arch)  # the family's own settings: defaults, or refused by name
        if cfg.block_causal:
            return self._validate_block(prompt_ids, params)
        r = Request("", list(prompt_ids), params, cfg.mask_token_id, cfg.logit_shift)
        if params.sparse_retention < 1.0 and r.cacheable >= self.config.sparse_min_cached:
            r.retention, r.min_kept = params.sparse_retention, self.config.page_size
        self.scheduler.check_fits(r)
        return r

    def _validate_block(self, prompt_ids: list[int], params) -> BlockRequest:
        cfg, b, budget = self.model_config, params.block_length, self.config.max_num_batched_tokens
        if b > budget:
            raise ValueError(f"block_length: {b} exceeds max_num_batched_tokens={budget}")
        # Prefill chunks take at most half the token budget (whole blocks), leaving room beside them.
        chunk = max(b, budget // 2 // b * b)
        r = BlockRequest("", list(prompt_ids), params, cfg.mask_token_id, cfg.logit_shift, chunk)
        if r.end > cfg.max_sequence_length:
            raise ValueError(f"max_tokens: prompt ({r.prompt_len}) + max_tokens ({params.max_tokens}), rounded up to "
                             f"whole blocks of {b}, exceed the model's context of {cfg.max_sequence_length} positions")
        self.scheduler.check_fits(r)
        return r

    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None,
                    request_id: str | None = None) -> str:
        return self.add(self.validate(prompt_ids, params or self.make_params()), request_id)

    def add(self, r: Request, request_id: str | None = None) -> str:
        """Queue a request that `validate` built (it is not checked again)."""
        r.request_id = str(next(self._ids)) if request_id is None else str(request_id)
        if r.request_id in self.requests:
            raise ValueError(f"request_id: {r.request_id!r} is already in use")
        self.scheduler.add(r)
        self.requests[r.request_id] = r
        return r.request_id

    def abort(self, request_id: str) -> bool:
        r = self.requests.get(request_id)
        if r is None or r.is_finished:
            return False
        self._finish(r, "abort")
        self._pending.append(self._output(r, []))
        return True

    def gauges(self) -> dict:
        """What the serving metrics show: requests running and waiting, K/V pages used and in all."""
        alloc = self.pool.allocator
        return {"running": len(self.scheduler.running), "waiting": len(self.scheduler.waiting),
                "kv_pages_used": alloc.num_used, "kv_pages_total": alloc.num_pages}

    def describe(self) -> str:
        """One line for the server log: model, device, pool, scheduler and cost model."""
        return (f"model {self.config.model} on {self.model.device} ({self.model.dtype}), "
                f"{self.pool.allocator.num_pages} K/V pages, scheduler {self.config.scheduler}, cost model "
                f"{'calibrated (refitted as it runs)' if self.cost.calibrated else 'fixed'} {self.cost.to_dict()}")

    def has_unfinished(self) -> bool:
        return bool(self._pending) or self.scheduler.has_work()

    # --- the loop -------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """One iteration: schedule, run, commit. Nothing a request carries escapes it: a failure in the
        batched forward is narrowed down to the request(s) that cause it, and a failure in one request's
        commit, stop check or streaming fails that request alone (with an internal error)."""
        begin = time.perf_counter()
        outputs, self._pending = self._pending, []
        batch = self.scheduler.schedule()
        if not batch:
            return outputs
        start = time.perf_counter()
        self.stats["iterations"] += 1
        done = self._run_isolated(batch, outputs)
        seconds = time.perf_counter() - start
        record = self._record_iteration(batch, seconds)
        for (r, phase), res in done:
            try:
                out = self._apply(r, phase, res)
            except Exception as e:
                outputs.append(self._fail(r, "commit", e))
                continue
            if out is not None:
                outputs.append(out)
        record.host_seconds = time.perf_counter() - begin - seconds
        return outputs

    def _run_isolated(self, batch: list[tuple[Request, Phase]], outputs: list[RequestOutput]) -> list:
        """(entry, results) for every request that ran. If the batch raises, each request runs alone:
        only those that still raise fail, and the others get exactly their batched tokens (batch
        invariance); a Refresh re-run rewrites whatever K/V the failed batch had stored."""
        try:
            return list(zip(batch, self.runner.run(batch), strict=True))
        except Exception as e:
            if len(batch) == 1:
                outputs.append(self._fail(batch[0][0], "forward", e))
                return []
        done = []
        for entry in batch:
            try:
                done.append((entry, self.runner.run([entry])[0]))
            except Exception as e:
                outputs.append(self._fail(entry[0], "forward", e))
        return done

    def _record_iteration(self, batch: list[tuple[Request, Phase]], seconds: float) -> IterationRecord:
        """What the iteration computed, how long it took and what the cost model predicted (before the
        commits change the requests)."""
        refresh = sum(r.refresh_cost for r, ph in batch if ph == Phase.REFRESH)
        reuse = [r for r, ph in batch if ph != Phase.REFRESH]
        reuse_tokens = sum(r.reuse_cost for r in reuse)
        kv = sum(self.scheduler.kv_bytes_read(r) for r in reuse)
        graphed = self.runner.last_graphed
        predicted = self.cost.predict(refresh, reuse_tokens, kv, graphed)
        record = IterationRecord(seconds, predicted, refresh, reuse_tokens, len(batch), kv, graphed)
        self.iteration_log.append(record)
        refined = self.refitter.observe(self.cost, record)
        if refined is not self.cost:
            self.scheduler.cost = refined
            (log.info if self.refitter.refits == 1 else log.debug)(
                "cost model refitted from %d measured iterations: %s", len(self.refitter.window), refined.to_dict())
        return record

    def _apply(self, r: Request, phase: Phase, res) -> RequestOutput | None:
        r.forwards += 1
        self.stats["forwards"] += 1
        self.stats["refresh_rows" if phase == Phase.REFRESH else "reuse_rows"] += (
            r.refresh_cost if phase == Phase.REFRESH else r.reuse_cost)
        if isinstance(r, BlockRequest):
            self.stats["committed"] += r.apply(res.plan, res.tokens, res.confidence)
            return self._advance(r)
        if phase == Phase.REFRESH and self.pool.holds(r.request_id):
            r.cached_block = r.block  # the Refresh stored this block's cache
        chosen = select_commits(res.confidence, quota=r.quota(), threshold=r.params.threshold,
                                transfer_p=r.transfer_p()).tolist()
        r.commit([res.positions[i] for i in chosen], [res.tokens[i] for i in chosen],
                 None if res.logprobs is None else [res.logprobs[i] for i in chosen])
        self.stats["committed"] += len(chosen)
        return self._advance(r)

    def _fail(self, r: Request, stage: str, e: Exception) -> RequestOutput:
        log.error("engine: request %s failed in %s: %s: %s", r.request_id, stage, type(e).__name__, e,
                  exc_info=(type(e), e, e.__traceback__))
        self.stats["failed"] += 1
        self._finish(r, "error", error=f"internal error in {stage}: {type(e).__name__}: {e}")
        return self._output(r, [])

    def _advance(self, r: Request) -> RequestOutput | None:
        """Stream what the committed prefix gained; finish on EOS, a stop string or the last block."""
        prefix = r.committed_prefix()
        keep, reason = self.stop_checker.check(prefix, r.params, r.streamed)
        if reason is None and r.all_blocks_done:
            keep, reason = len(prefix), "length"
        new = prefix[r.streamed:keep]
        logprobs = r.logprobs_of(r.streamed, r.streamed + len(new))
        r.streamed = max(r.streamed, keep)
        if reason is not None:
            self._finish(r, reason)
        return self._output(r, new, logprobs) if new or reason else None

    def _finish(self, r: Request, reason: str, error: str | None = None) -> None:
        self.scheduler.remove(r)
        r.status, r.finish_reason, r.error = Status.FINISHED, reason, error
        self.requests.pop(r.request_id, None)

    def _output(self, r: Request, new: list[int], logprobs: list[tuple] | None = None) -> RequestOutput:
        return RequestOutput(r.request_id, new, r.is_finished, r.finish_reason, r.error, r.prompt_len, r.streamed,
                             r.forwards, logprobs)

    # --- offline API ----------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams] | None = None
                 ) -> list[GenerationResult]:
        plist = params if isinstance(params, list) else [params or self.make_params()] * len(prompts)
        ids = [self.add_request(p, sp) for p, sp in zip(prompts, plist, strict=True)]
        results = {i: GenerationResult(i, [], "", len(p), 0) for i, p in zip(ids, prompts, strict=True)}
        while any(not res.finish_reason for res in results.values()):
            for out in self.step():
                res = results.get(out.request_id)
                if res is None:
                    continue
                if out.new_token_ids:
                    res.token_ids += out.new_token_ids
                    res.deltas.append(list(out.new_token_ids))
                if out.logprobs is not None:
                    res.logprobs = (res.logprobs or []) + out.logprobs
                if out.finished:
                    res.finish_reason, res.forwards, res.error = out.finish_reason, out.forwards, out.error
        for res in results.values():
            if self.tokenizer is not None:
                res.text = self.tokenizer.decode(res.token_ids)
        return [results[i] for i in ids]
