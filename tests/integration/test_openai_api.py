"""The OpenAI-compatible server with the official `openai` client (sync and async; chat and completions;
streaming and not), against `make serve-openai`'s processes; every answer is the in-process engine's
(the `expected` fixture) on the bundled model."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import openai
import pytest

from openai_server.triton import Triton, TritonRequest

LONG_COPY = "copy abcdefgh ="
BLOCKS = {"max_tokens": 32, "block_length": 8}  # the answer is committed block by block: several deltas


@pytest.fixture(scope="module")
def client(openai_pair):
    return openai.OpenAI(base_url=openai_pair.base_url, api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def aclient_url(openai_pair):
    return openai_pair.base_url


def test_models(client):
    assert [m.id for m in client.models.list().data] == ["dllm"]
    assert client.models.retrieve("dllm").owned_by == "dllm-serve"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


def test_chat_answers_the_task_prompt_through_the_chat_template(client, expected):
    r = client.chat.completions.create(model="dllm", messages=[{"role": "user", "content": "1234+4321="}])
    assert r.choices[0].message.content == "5555" == expected("1234+4321=")
    assert r.choices[0].message.role == "assistant" and r.choices[0].finish_reason == "stop"
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    # 10 prompt characters, 4 answer tokens (the end-of-sequence token is not counted).
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (10, 4, 14)
    # A system message and earlier turns are not shown to the bundled model (its template), text parts are.
    r = client.chat.completions.create(model="dllm", messages=[
        {"role": "system", "content": "You are helpful."}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": [{"type": "text", "text": "sort dcba ="}]}])
    assert r.choices[0].message.content == "abcd" == expected("sort dcba =")


def test_chat_stream_one_chunk_per_delta_with_usage(client, expected):
    stream = client.chat.completions.create(model="dllm", messages=[{"role": "user", "content": LONG_COPY}],
                                            stream=True, stream_options={"include_usage": True}, extra_body=BLOCKS)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) > 1 and "".join(texts) == expected(LONG_COPY, **BLOCKS) == "abcdefgh"
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert reasons == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_async_n_and_several_prompts_stream_and_not(aclient_url, expected):
    prompts, params = ["12+34=", "reverse hello ="], {"n": 2, "seed": 11, "temperature": 0.8}

    async def run():
        async with openai.AsyncOpenAI(base_url=aclient_url, api_key="unused", max_retries=0) as client:
            whole = await client.completions.create(model="dllm", prompt=prompts, **params)
            texts = {}
            async for chunk in await client.completions.create(model="dllm", prompt=prompts, stream=True, **params):
                for choice in chunk.choices:
                    texts[choice.index] = texts.get(choice.index, "") + choice.text
            return whole, texts

    whole, streamed = asyncio.run(run())
    # OpenAI's order: prompt p's answer i is choice p * n + i; answer i has the seed seed + i.
    want = [expected(p, seed=11 + i, temperature=0.8) for p in prompts for i in range(2)]
    assert [c.text for c in sorted(whole.choices, key=lambda c: c.index)] == want
    assert [streamed[i] for i in range(4)] == want
    assert all(c.finish_reason == "stop" for c in whole.choices)
    assert whole.usage.prompt_tokens == len("12+34=") + len("reverse hello =")


def test_async_chat_streams_run_at_once(aclient_url, expected):
    prompts = ["1234+4321=", "sort dcba =", "copy abcdef =", "reverse hello ="]

    async def one(client, prompt):
        text = ""
        async for chunk in await client.chat.completions.create(
                model="dllm", messages=[{"role": "user", "content": prompt}], stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
        return text

    async def run():
        async with openai.AsyncOpenAI(base_url=aclient_url, api_key="unused", max_retries=0) as client:
            return await asyncio.gather(*(one(client, p) for p in prompts))

    assert asyncio.run(run()) == [expected(p) for p in prompts]


def test_seed_determinism(client, expected):
    def ask(**kw):
        r = client.completions.create(model="dllm", prompt="copy abcdef =", temperature=1.0, max_tokens=16, **kw)
        return [c.text for c in r.choices]

    assert ask(seed=5) == ask(seed=5) == [expected("copy abcdef =", temperature=1.0, max_tokens=16, seed=5)]
    assert ask(seed=5, n=2)[1] == ask(seed=6)[0]  # answer i of n is the request with seed + i


def test_stop_and_length(client, expected):
    r = client.completions.create(model="dllm", prompt=LONG_COPY, stop=["de"], extra_body=BLOCKS)
    assert r.choices[0].text == expected(LONG_COPY, stop=["de"], **BLOCKS) == "abc"
    assert r.choices[0].finish_reason == "stop"
    r = client.chat.completions.create(model="dllm", messages=[{"role": "user", "content": LONG_COPY}],
                                       max_completion_tokens=3, extra_body={"block_length": 3})
    assert r.choices[0].message.content == "abc" and r.choices[0].finish_reason == "length"


def test_extra_body_dllm_settings(client, expected):
    settings = {"block_length": 4, "steps": 8, "sparse_retention": 0.5, "top_k": 3}
    r = client.completions.create(model="dllm", prompt=LONG_COPY, max_tokens=16, extra_body=settings)
    assert r.choices[0].text == expected(LONG_COPY, max_tokens=16, **settings)
    r = client.completions.create(model="dllm", prompt=LONG_COPY, max_tokens=16, extra_body={"threshold": 0.5})
    assert r.choices[0].text == expected(LONG_COPY, max_tokens=16, threshold=0.5)


def test_echo(client, expected):
    r = client.completions.create(model="dllm", prompt="sort dcba =", echo=True)
    assert r.choices[0].text == "sort dcba =" + expected("sort dcba =")


def test_readme_client_example_runs_as_written(openai_pair, capsys):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"```python\n(import openai\n\nclient = openai\.OpenAI\(.+?)```", readme, re.S)
    assert block, "README: the openai client example is missing"
    code = block.group(1).replace("http://127.0.0.1:9000/v1", openai_pair.base_url)
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102  (the README's own example)
    printed = capsys.readouterr().out
    assert printed.startswith("5555\nabcdefgh"), printed


def _model_entries(pair, prompt: str, k: int, **sampling) -> list[dict]:
    """The model's own `logprobs` entries for `prompt`, straight from Triton's gRPC stream."""
    async def run():
        triton = Triton(f"127.0.0.1:{pair.grpc_port}", "dllm")
        try:
            request = TritonRequest(prompt, {"logprobs": k, **sampling}, stream=False, logprobs=True)
            return [e for u in [u async for u in triton.generate(request)] for a in u.answers for e in a.logprobs or []]
        finally:
            await triton.close()

    return asyncio.run(run())


def test_logprobs_chat_and_completions(client, openai_pair):
    entries = _model_entries(openai_pair, "1234+4321=", 2)
    committed = [next(iter(e.values())) for e in entries]
    r = client.chat.completions.create(model="dllm", messages=[{"role": "user", "content": "1234+4321="}],
                                       logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert "".join(t.token for t in content) == r.choices[0].message.content == "5555"
    assert [t.logprob for t in content] == [c["logprob"] for c in committed]
    for t, e in zip(content, entries, strict=True):
        ranked = sorted(e.values(), key=lambda v: v["rank"])[:2]  # the k best (the committed one may rank lower)
        assert [(x.token, x.logprob) for x in t.top_logprobs] == [(v["decoded_token"], v["logprob"]) for v in ranked]
        assert t.bytes == list(t.token.encode())
    # Streamed: each chunk carries the entries of the tokens it carries; together the same as whole.
    stream = client.chat.completions.create(model="dllm", messages=[{"role": "user", "content": LONG_COPY}],
                                            logprobs=True, stream=True, extra_body=BLOCKS)
    streamed = [t for c in stream if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    whole = client.chat.completions.create(model="dllm", messages=[{"role": "user", "content": LONG_COPY}],
                                           logprobs=True, extra_body=BLOCKS).choices[0].logprobs.content
    assert [(t.token, t.logprob, t.top_logprobs) for t in streamed] == [(t.token, t.logprob, []) for t in whole]
    assert "".join(t.token for t in whole) == "abcdefgh"
    # Completions: tokens, their log-probabilities, the k best as a dict, offsets into the text (echo included).
    lp = client.completions.create(model="dllm", prompt="1234+4321=", logprobs=2, echo=True).choices[0].logprobs
    assert lp.tokens == list("5555") and lp.token_logprobs == [c["logprob"] for c in committed]
    assert lp.text_offset == [10, 11, 12, 13]
    best = [sorted(e.values(), key=lambda v: v["rank"])[:2] for e in entries]
    assert lp.top_logprobs == [{v["decoded_token"]: v["logprob"] for v in b} for b in best]
