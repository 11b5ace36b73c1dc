"""vLLM's sampling keys that belong to the serving layer, not to one engine request (issue 23).

- `n`: n independent answers to one prompt, each its own engine request; answer i uses the seed
  (seed + i) mod 2^63, so each answer is exactly what a single request with that seed returns.
  Answered as vLLM's Triton backend answers it: every response carries n elements in `text_output`
  (and in `finish_reason`, `num_output_tokens`), one per answer.
- `best_of`: accepted when it equals `n` (vLLM's meaning then: keep all n); a larger value would
  generate candidates that are never returned: refused (ask for `n` answers and pick yourself).
- `prompt_logprobs`: refused by name (prompt tokens are given, never predicted). `logprobs` is an
  engine setting (SamplingParams.logprobs).
- `skip_special_tokens`: how the answer's tokens are turned into text (default true, as in vLLM).

Every mistake raises a ValueError whose message starts with the key's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.engine.param_parsing import MAX_INT64, parse_bool, parse_int, show

SERVING_KEYS = ("n", "best_of", "prompt_logprobs", "skip_special_tokens")
# n answers are n engine requests sharing the running set: a bound keeps one client from filling it.
MAX_N = 16


@dataclass
class ServingKeys:
    n: int = 1
    skip_special_tokens: bool = True

    def seeds(self, seed: int) -> list[int]:
        """The seed of each answer: consecutive, so answer i is reproduced alone with seed + i."""
        return [(seed + i) % (MAX_INT64 + 1) for i in range(self.n)]


def take_serving_keys(sampling: dict) -> ServingKeys:
    """Remove the serving keys from `sampling` (the rest goes to the engine) and validate them."""
    raw = {key: sampling.pop(key) for key in SERVING_KEYS if key in sampling}
    keys = ServingKeys()
    if raw.get("n") is not None:
        keys.n = parse_int("n", raw["n"], lo=1, hi=MAX_N)
    if raw.get("best_of") is not None:
        best_of = parse_int("best_of", raw["best_of"], lo=1)
        if best_of != keys.n:
            raise ValueError(f"best_of: only best_of == n ({keys.n}) is supported, got {show(best_of)}: the "
                             "other candidates would be generated and never returned (ask for n answers, which "
                             "carry cumulative_logprob, and choose among them)")
    if raw.get("prompt_logprobs") is not None:
        raise ValueError("prompt_logprobs: not supported: a diffusion model is given the prompt and never "
                         "predicts it, so prompt tokens have no log-probability")
    if raw.get("skip_special_tokens") is not None:
        keys.skip_special_tokens = parse_bool("skip_special_tokens", raw["skip_special_tokens"])
    return keys
