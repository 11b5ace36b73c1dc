"""The routes: `/v1/chat/completions`, `/v1/completions` (JSON or server-sent events), `/v1/models`,
`/health` (200 once Triton has the model ready, else 503).

A streamed request waits for the model's first response before it answers, so that every mistake the
model finds (it checks the whole request before generating) still gets its HTTP status; later failures
arrive as an `{"error": ...}` event, which the `openai` client raises. A client that goes away cancels the
Triton request: Starlette cancels a stream's generator when the connection closes, and a non-streamed
request is raced against the connection's `http.disconnect`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types import Model
from pydantic import ValidationError

from openai_server import sampling
from openai_server.chat import ChatPrompt
from openai_server.choices import Assembler, Job
from openai_server.errors import APIError, invalid, unavailable, unknown_model
from openai_server.jobs import updates
from openai_server.protocol import ChatRequest, CompletionRequest
from openai_server.triton import Triton, TritonRequest

log = logging.getLogger("openai_server")
# A request holds a prompt the model's context must fit (the bundled model's: 12 KiB at most) and a few
# parameters; a chat with a long history of a real checkpoint's context stays far below this.
MAX_BODY_BYTES = 4 << 20


@dataclass
class ServerConfig:
    triton_url: str = "localhost:8001"
    triton_model: str = "dllm"  # the model's name in Triton
    served_names: list[str] = field(default_factory=lambda: ["dllm"])  # what clients put in `model`
    tokenizer_dir: Path | None = None  # where the chat template is (None: the bundled model's)


def create_app(config: ServerConfig) -> FastAPI:
    chat_prompt = ChatPrompt(config.tokenizer_dir) if config.tokenizer_dir else None
    created = int(time.time())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.triton = Triton(config.triton_url, config.triton_model)
        yield
        await app.state.triton.close()

    app = FastAPI(title="dllm-serve OpenAI-compatible API", lifespan=lifespan, docs_url=None, redoc_url=None)

    @app.exception_handler(APIError)
    async def api_error(_request: Request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(Exception)
    async def ours(_request: Request, e: Exception):
        log.exception("internal error")
        return JSONResponse(APIError(500, f"internal error: {type(e).__name__}: {e}").body(), status_code=500)

    def model_card(name: str) -> Model:
        return Model(id=name, object="model", created=created, owned_by="dllm-serve")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card(n).model_dump() for n in config.served_names]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str):
        if name not in config.served_names:
            raise unknown_model(name, config.served_names)
        return model_card(name).model_dump()

    @app.get("/health")
    async def health(request: Request):
        if not await request.app.state.triton.model_ready():
            raise unavailable(f"model {config.triton_model!r} is not ready on Triton at {config.triton_url}")
        return Response(status_code=200)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        req = await _parse(request, ChatRequest, config)
        params, k = sampling.chat_sampling(req)
        if chat_prompt is None:
            raise APIError(500, "internal error: no tokenizer directory, so no chat template")
        prompt = chat_prompt.render(req.messages)
        job = Job(TritonRequest(prompt, params, stream=bool(req.stream), logprobs=k is not None), 0)
        return await _answer(request, req, [job], Assembler(True, req.model, k, _include_usage(req)))

    @app.post("/v1/completions")
    async def completions(request: Request):
        req = await _parse(request, CompletionRequest, config)
        params, k = sampling.completion_sampling(req)
        prompts = _prompts(req.prompt)
        n = req.n or 1
        jobs = [Job(TritonRequest(p, params, stream=bool(req.stream), logprobs=k is not None), i * n,
                    p if req.echo else "") for i, p in enumerate(prompts)]
        return await _answer(request, req, jobs, Assembler(False, req.model, k, _include_usage(req)))

    return app


def _include_usage(req) -> bool:
    return bool(req.stream and req.stream_options and req.stream_options.include_usage)


def _prompts(prompt) -> list[str]:
    if isinstance(prompt, str):
        prompt = [prompt]
    if not prompt:
        raise invalid("prompt: empty list")
    if not all(isinstance(p, str) for p in prompt):
        raise invalid("prompt: token ids are not supported: send text (the model takes text and tokenizes it)")
    return prompt


async def _read_body(request: Request) -> bytes:
    """The body, refused once it passes MAX_BODY_BYTES (uvicorn itself sets no limit)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise APIError(413, f"body: larger than {MAX_BODY_BYTES} bytes", "body")
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse(request: Request, model, config: ServerConfig):
    try:
        body = json.loads(await _read_body(request))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise invalid(f"body: not valid JSON ({e})", "body") from None
    if not isinstance(body, dict):
        raise invalid("body: expected a JSON object", "body")
    try:
        req = model.model_validate(body)
    except ValidationError as e:
        first = e.errors()[0]
        param = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]).lstrip(".")
        param = param.split(".function-", 1)[0]  # pydantic names the union member tried last; the field suffices
        raise invalid(f"{param}: {first['msg']}", param) from None
    if req.model not in config.served_names:
        raise unknown_model(req.model, config.served_names)
    if req.stream_options is not None and not req.stream:
        raise invalid("stream_options: only allowed when stream is true")
    return req


async def _answer(request: Request, req, jobs: list[Job], out: Assembler):
    source = updates(request.app.state.triton, jobs)
    try:
        if not req.stream:
            body = await _until_disconnect(request, _collect(source, out, req))
            return Response(body, media_type="application/json", status_code=200 if body is not _GONE else 499)
        first = await _until_disconnect(request, anext(source))  # errors before any output get their status
        if first is _GONE:
            return Response(status_code=499)
    except APIError as e:
        raise _as_named(e, req) from None
    except BaseException:
        await source.aclose()
        raise
    return StreamingResponse(_events(source, first, jobs, out, req), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _as_named(e: APIError, req) -> APIError:
    """The model's error with the field named as the client named it."""
    if e.status != 400:
        return e
    return invalid(sampling.rename_field(e.message, req))


async def _collect(source, out: Assembler, req) -> str:
    async for job, update in source:
        out.record(job, update)
    return out.response()


async def _events(source, first, jobs: list[Job], out: Assembler, req):
    """The server-sent events: the chunks of one Triton response go out in one write."""
    n = req.n or 1
    try:
        starts = out.first_chunks([j.first_index + i for j in jobs for i in range(n)])
        yield _sse(starts + out.chunks(*first))
        async for job, update in source:
            chunks = out.chunks(job, update)
            if chunks:
                yield _sse(chunks)
        if out.include_usage:
            yield _sse([out.usage_chunk()])
    except APIError as e:
        yield f"data: {json.dumps(_as_named(e, req).body())}\n\n"
    except Exception as e:  # ours, after the headers went out: the client still gets an error event
        log.exception("internal error in a stream")
        yield f"data: {json.dumps(APIError(500, f'internal error: {type(e).__name__}: {e}').body())}\n\n"
    finally:
        await source.aclose()  # on a disconnect too: cancels the Triton calls still running
    yield "data: [DONE]\n\n"


_GONE = object()  # the client disconnected: nobody reads the answer (499, nginx's "client closed request")


def _sse(chunks: list[str]) -> str:
    return "".join(f"data: {chunk}\n\n" for chunk in chunks)


async def _until_disconnect(request: Request, awaitable):
    """Await `awaitable` unless the client disconnects first; then cancel it (and so the Triton call) and
    return _GONE."""
    work = asyncio.ensure_future(awaitable)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not work.done():
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        return _GONE
    return work.result()
