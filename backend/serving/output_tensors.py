"""The output tensors of one response, by the vLLM backend's names: `text_output` always, the other
outputs only when the request asked for them (`return_*` inputs), one element per answer of `n`."""

from __future__ import annotations

import numpy as np

from backend.serving.answers import AnswerGroup, GroupReply
from backend.serving.request_tracker import logprobs_json


def output_tensors(pb, group: AnswerGroup, reply: GroupReply) -> list:
    """`pb`: triton_python_backend_utils (or a stand-in with its Tensor)."""
    req = group.request

    def strings(values):
        return np.array([v.encode("utf-8") for v in values], dtype=np.object_)

    tensors = [pb.Tensor("text_output", strings(reply.texts))]
    if req.return_finish_reason:
        tensors.append(pb.Tensor("finish_reason", strings(reply.vllm_reasons)))
    if req.return_finish_detail:
        tensors.append(pb.Tensor("finish_detail", strings(reply.details)))
    if req.return_logprobs:  # "null" per answer when `logprobs` was not asked for, as vLLM
        asked = req.sampling.get("logprobs") is not None
        tensors.append(pb.Tensor("logprobs", strings(
            [logprobs_json(lp if asked else None) for lp in reply.logprobs or [None] * len(reply.texts)])))
    if req.return_cumulative_logprob:
        tensors.append(pb.Tensor("cumulative_logprob", np.array(reply.cumulative_logprobs, dtype=np.float32)))
    if req.return_num_input_tokens:
        tensors.append(pb.Tensor("num_input_tokens", np.array([group.num_prompt_tokens], dtype=np.uint32)))
    if req.return_num_output_tokens:
        tensors.append(pb.Tensor("num_output_tokens", np.array(reply.num_output_tokens, dtype=np.uint32)))
    return tensors
