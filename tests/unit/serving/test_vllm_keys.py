"""vLLM's sampling keys (issue 23), as properties: min_tokens holds off EOS and stop strings
whenever they come, include_stop_str_in_output keeps the stop string, the n answers of a request
are the single requests with consecutive seeds, and a group's responses carry one element per answer."""

from __future__ import annotations

import random

import pytest

from backend.engine.sampling_params import SamplingParams
from backend.engine.stop_checker import StopChecker
from backend.serving.answers import AnswerGroup
from backend.serving.inputs import GenerateRequest
from backend.serving.request_tracker import RequestTracker
from backend.serving.vllm_keys import take_serving_keys

EOS = 25


class _Chars:
    def decode(self, ids, skip_special_tokens=True):
        return "".join("" if i == EOS else chr(ord("a") + i) for i in ids)


def test_min_tokens_holds_off_an_eos_forced_anywhere():
    checker, rng = StopChecker(_Chars(), [EOS]), random.Random(0)
    for _ in range(500):
        prefix = [rng.randrange(4) for _ in range(rng.randrange(1, 20))]
        for at in rng.sample(range(len(prefix)), k=rng.randrange(1, len(prefix) + 1)):
            prefix[at] = EOS  # EOS forced early, possibly several times
        m = rng.randrange(0, 21)
        params = SamplingParams(max_tokens=32, min_tokens=m, stop=rng.choice([[], ["ab"], ["c"]]))
        keep, reason = checker.check(prefix, params, streamed=0)
        if reason is not None:  # it may end only past the first m positions
            assert keep >= min(m, len(prefix)) or reason == "stop" and keep >= 0
        first_late_eos = next((i for i, t in enumerate(prefix) if t == EOS and i >= m), None)
        if reason == "eos":
            assert keep == first_late_eos
        if m >= len(prefix):
            assert reason is None or reason == "stop" and _Chars().decode(prefix[:m]).find(
                params.stop[0]) + len(params.stop[0]) > len(_Chars().decode(prefix[:m]))


def test_min_tokens_refused_above_max_tokens():
    with pytest.raises(ValueError, match="^min_tokens: "):
        SamplingParams(max_tokens=4, min_tokens=5)


def test_include_stop_str_in_output_keeps_the_stop_string():
    checker = StopChecker(_Chars(), [EOS])
    prefix = [0, 1, 2, 3, 0, 1]  # "abcdab"
    assert checker.check(prefix, SamplingParams(max_tokens=8, stop=["cd"]), 0) == (2, "stop")
    assert checker.check(prefix, SamplingParams(max_tokens=8, stop=["cd"], include_stop_str_in_output=True),
                         0) == (4, "stop")


@pytest.mark.parametrize("key, value", [("presence_penalty", 0.5), ("frequency_penalty", "-1"),
                                        ("repetition_penalty", 1.1)])
def test_penalties_refused_by_name_unless_neutral(key, value):
    neutral = {"presence_penalty": 0, "frequency_penalty": "0", "repetition_penalty": "1.0"}
    SamplingParams.from_dict(neutral)
    with pytest.raises(ValueError, match=f"^{key}: only .* no defined order"):
        SamplingParams.from_dict({key: value})


def test_serving_keys_leave_the_engine_keys_and_give_consecutive_seeds():
    sampling = {"n": "3", "best_of": 3, "skip_special_tokens": "false", "max_tokens": 8}
    keys = take_serving_keys(sampling)
    assert sampling == {"max_tokens": 8} and keys.n == 3 and not keys.skip_special_tokens
    assert keys.seeds(2**63 - 2) == [2**63 - 2, 2**63 - 1, 0]
    for bad in ({"best_of": 2}, {"n": 0}, {"n": 17}, {"prompt_logprobs": 1}):
        with pytest.raises(ValueError, match=f"^{next(iter(bad))}: "):
            take_serving_keys(dict(bad))


class _Out:
    def __init__(self, ids, finished=False, reason=None, total=0):
        self.new_token_ids, self.finished, self.finish_reason = ids, finished, reason
        self.num_output_tokens, self.forwards, self.error = total, 1, None


def test_group_answers_are_independent_and_final_once_all_are_done():
    req = GenerateRequest("p", stream=True, exclude_input_in_output=True)
    decode = _Chars().decode
    group = AnswerGroup([RequestTracker(req, 1, decode) for _ in range(2)], ["r/0", "r/1"])
    first = group.on_output("r/1", _Out([0, 1], total=2))
    assert first.texts == ["", "ab"] and first.vllm_reasons == ["None", "None"] and not first.final
    done0 = group.on_output("r/0", _Out([2, EOS], True, "eos", 2))
    assert done0.texts == ["c", ""] and done0.vllm_reasons == ["stop", "None"] and not done0.final
    last = group.on_output("r/1", _Out([3], True, "length", 3))
    assert last.final and last.texts == ["", "d"] and last.vllm_reasons == ["stop", "length"]
    assert last.details == ["eos", "length"]


class _LpOut(_Out):
    def __init__(self, ids, lps, finished=False, reason=None, total=0):
        super().__init__(ids, finished, reason, total)
        self.logprobs = lps


def test_logprobs_follow_the_tokens_of_each_response_and_sum_up():
    """Streaming: a response carries the entries of the tokens behind it (held tokens wait with their
    text); the cumulative log-probability is the running sum; an answer without news carries []."""
    req = GenerateRequest("p", stream=True, exclude_input_in_output=True, return_logprobs=True,
                          sampling={"logprobs": 1})
    group = AnswerGroup([RequestTracker(req, 1, _Chars().decode) for _ in range(2)], ["r/0", "r/1"])
    first = group.on_output("r/0", _LpOut([0, 1], [(-0.5, 1, [(0, -0.5)]), (-1.0, 2, [(3, -0.2)])], total=2))
    assert first.texts == ["ab", ""] and first.logprobs[1] == []
    assert first.logprobs[0] == [{0: {"logprob": -0.5, "rank": 1, "decoded_token": "a"}},
                                 {1: {"logprob": -1.0, "rank": 2, "decoded_token": "b"},
                                  3: {"logprob": -0.2, "rank": 1, "decoded_token": "d"}}]
    assert first.cumulative_logprobs == [-1.5, 0.0]
    last = group.on_output("r/0", _LpOut([2], [(-0.25, 1, [(2, -0.25)])], True, "length", 3))
    assert [list(d) for d in last.logprobs[0]] == [[2]] and last.cumulative_logprobs[0] == -1.75
    assert not last.final  # answer r/1 has not finished
