"""Triton's responses as OpenAI choices: one whole response, or server-sent-event chunks as they come.

A request is one or more generations (`Job`s: the chat, or each prompt of a completion request), each
with n answers; answer i of job p is choice `p * n + i` (OpenAI's order). Each response of the model
carries, per answer, the text it adds (`""` for an answer without news), the finish reason on the
response where the answer ends, and its tokens; a chunk goes out per answer with news, so a stream
has one chunk per committed delta. The objects are the `openai` package's own types.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from openai.types import Completion, CompletionChoice, CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage
from openai.types.chat.chat_completion import Choice as ChatChoice
from openai.types.chat.chat_completion import ChoiceLogprobs
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_chunk import ChoiceLogprobs as ChunkLogprobs

from openai_server.errors import APIError
from openai_server.logprobs import chat_logprobs, completion_logprobs, merge_completion
from openai_server.triton import AnswerNews, TritonRequest, Update

FINISH_REASONS = ("stop", "length")


@dataclass
class Job:
    request: TritonRequest
    first_index: int  # the choice index of its first answer
    echo: str = ""  # completions with echo: the prompt, before the answer's text


@dataclass
class _Choice:
    text: str = ""
    finish_reason: str | None = None
    tokens: int = 0
    logprobs: list = field(default_factory=list)  # chat: token entries; completions: Logprobs parts


class Assembler:
    def __init__(self, chat: bool, model: str, logprobs_k: int | None, include_usage: bool = False):
        self.chat = chat
        self.model = model
        self.k = logprobs_k
        self.include_usage = include_usage
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.choices: dict[int, _Choice] = {}
        self.prompt_tokens: dict[int, int] = {}  # per job: OpenAI counts each prompt once, whatever n

    # --- both ---

    def add(self, job: Job, update: Update) -> list[tuple[int, AnswerNews, str]]:
        """Record one response of `job`; returns (choice index, news, text to send) per answer with news (the
        text to send is the news' text, after the echoed prompt on the answer's first)."""
        if update.num_input_tokens is not None:
            self.prompt_tokens[job.first_index] = update.num_input_tokens
        news = []
        for i, answer in enumerate(update.answers):
            index = job.first_index + i
            choice = self.choices.get(index)
            if choice is None:
                choice = self.choices[index] = _Choice(text=job.echo)
                text = job.echo + answer.text
            else:
                text = answer.text
            if answer.finish_reason is not None and answer.finish_reason not in FINISH_REASONS:
                raise APIError(503, f"the model ended the answer with {answer.finish_reason!r} (it is unloading)")
            choice.text += answer.text
            choice.tokens += answer.num_output_tokens
            new_reason = answer.finish_reason is not None and choice.finish_reason is None
            if new_reason:
                choice.finish_reason = answer.finish_reason
            if text or new_reason or answer.logprobs:
                news.append((index, AnswerNews(answer.text, answer.finish_reason if new_reason else None,
                                               answer.num_output_tokens, answer.logprobs), text))
        return news

    def usage(self) -> CompletionUsage:
        prompt = sum(self.prompt_tokens.values())
        completion = sum(c.tokens for c in self.choices.values())
        return CompletionUsage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)

    # --- streaming ---

    def first_chunks(self, indices: list[int]) -> list[str]:
        """Chat streams start each choice with its role, as OpenAI's do."""
        if not self.chat:
            return []
        return [self._chunk(ChunkChoice(index=i, delta=ChoiceDelta(role="assistant", content=""),
                                        finish_reason=None)) for i in indices]

    def chunks(self, job: Job, update: Update) -> list[str]:
        out = []
        for index, news, text in self.add(job, update):
            choice = self.choices[index]
            if self.chat:
                lp = None
                if self.k is not None and news.logprobs:
                    lp = ChunkLogprobs(content=chat_logprobs(news.logprobs, self.k))
                delta = ChoiceDelta(content=text) if text else ChoiceDelta()
                out.append(self._chunk(ChunkChoice(index=index, delta=delta, finish_reason=news.finish_reason,
                                                   logprobs=lp)))
            else:
                lp = None
                if self.k is not None and news.logprobs:
                    lp = completion_logprobs(news.logprobs, self.k, len(choice.text) - len(news.text))
                # OpenAI's CompletionChoice types finish_reason as required; streamed chunks carry null.
                out.append(self._chunk(CompletionChoice.model_construct(index=index, text=text, logprobs=lp,
                                                                        finish_reason=news.finish_reason)))
        return out

    def usage_chunk(self) -> str:
        return self._chunk(None)

    def _chunk(self, choice) -> str:
        choices = [] if choice is None else [choice]
        usage = self.usage() if choice is None else None
        if self.chat:
            obj = ChatCompletionChunk(id=self.id, object="chat.completion.chunk", created=self.created,
                                      model=self.model, choices=choices)
        else:
            obj = Completion.model_construct(id=self.id, object="text_completion", created=self.created,
                                             model=self.model, choices=choices)
        if self.include_usage:
            obj.usage = usage  # OpenAI's rule: every chunk has "usage", null but on the last
        return obj.model_dump_json(exclude_unset=True, exclude_none=False)

    # --- one response ---

    def record(self, job: Job, update: Update) -> None:
        """Non-streaming: record a response, its log-probabilities included."""
        for index, news, _text in self.add(job, update):
            if self.k is None or not news.logprobs:
                continue
            choice = self.choices[index]
            if self.chat:
                choice.logprobs += chat_logprobs(news.logprobs, self.k)
            else:
                choice.logprobs.append(completion_logprobs(news.logprobs, self.k, len(choice.text) - len(news.text)))

    def response(self) -> str:
        usage = self.usage()
        indices = sorted(self.choices)
        if self.chat:
            choices = [ChatChoice(index=i,
                                  message=ChatCompletionMessage(role="assistant", content=self.choices[i].text),
                                  finish_reason=self.choices[i].finish_reason,
                                  logprobs=ChoiceLogprobs(content=self.choices[i].logprobs) if self.k is not None
                                  else None) for i in indices]
            obj = ChatCompletion(id=self.id, object="chat.completion", created=self.created, model=self.model,
                                 choices=choices, usage=usage)
        else:
            choices = [CompletionChoice(index=i, text=self.choices[i].text, finish_reason=self.choices[i].finish_reason,
                                        logprobs=merge_completion(self.choices[i].logprobs) if self.k is not None
                                        else None) for i in indices]
            obj = Completion(id=self.id, object="text_completion", created=self.created, model=self.model,
                             choices=choices, usage=usage)
        return obj.model_dump_json()
