"""The generations of one HTTP request as one sequence of (job, update): a chat is one job; a completion
request with several prompts is one job per prompt, run at once and interleaved as their responses
come. Leaving the sequence early (an error, or the HTTP client went away) cancels every job's call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from openai_server.choices import Job
from openai_server.triton import Triton, Update

_DONE = object()


async def updates(triton: Triton, jobs: list[Job]) -> AsyncIterator[tuple[Job, Update]]:
    if len(jobs) == 1:  # the common case: no task, no queue
        async for update in triton.generate(jobs[0].request):
            yield jobs[0], update
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def run(job: Job) -> None:
        try:
            async for update in triton.generate(job.request):
                await queue.put((job, update))
            await queue.put(_DONE)
        except BaseException as e:  # handed to the consumer, which raises it
            await queue.put(e)
            if isinstance(e, asyncio.CancelledError):
                raise

    tasks = [asyncio.create_task(run(job)) for job in jobs]
    try:
        left = len(jobs)
        while left:
            item = await queue.get()
            if item is _DONE:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
