"""`/v1/completions` and `/v1/chat/completions` over the continuous-batching engine: OpenAI's
request and response shapes, streamed (server-sent events) or not."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from fastapi import Request
from fastapi.responses import StreamingResponse

from .continuous import GenerationRequest, QueueFull
from .requests import ApiError, ClientGone, error_body, json_body, texts_of

FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}
DISCONNECT_POLL_S = 0.25  # how often a waiting non-streamed request checks that its client is there


def generation_options(body: dict) -> dict[str, Any]:
    """OpenAI sampling parameters as `bgcli generate` options (temperature 0 = greedy)."""
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ApiError(400, '"temperature" must be a number >= 0')
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, '"stop" must be a string or a list of non-empty strings')
    options: dict[str, Any] = {
        "max_new_tokens": body.get("max_tokens") or body.get("max_completion_tokens") or 16
    }
    if temperature > 0:
        options |= {"sample": True, "temperature": float(temperature), "top_k": 0}
    if body.get("top_p") is not None:
        options["top_p"] = body["top_p"]
    if stop:
        options["stop"] = stop
    if body.get("seed") is not None:
        options["seed"] = body["seed"]
    n = body.get("n", 1)
    n = 1 if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ApiError(400, '"n" must be a whole number >= 1')
    if n > 1:
        if temperature == 0:
            raise ApiError(
                400, '"n" > 1 needs sampling ("temperature" > 0): greedy decoding gives one answer'
            )
        options["num_return_sequences"] = n
    return options


def prompts_of(body: dict, tokenizer, served_name: str, chat: bool) -> list[str]:
    if not chat:
        prompts = texts_of(body, "prompt")
        if not all(isinstance(p, str) for p in prompts):
            raise ApiError(400, '"prompt" must be a string or a list of strings')
        return prompts
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ApiError(400, '"messages" must be a non-empty list of {role, content} objects')
    if not tokenizer.chat_template:
        raise ApiError(400, f"model '{served_name}' has no chat template; use /v1/completions")
    return [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)]


async def generation_endpoint(server, request: Request, chat: bool):
    from ..inference import generate

    body = await json_body(request)
    served = server.model(body.get("model"))
    request.state.model = served.name
    options = generation_options(body)
    config = server.config("generate", served, options)
    loaded = await server.loaded(served, "generate", lambda: generate.load(config))
    prompts = prompts_of(body, loaded[1], served.name, chat)
    engine = await server.generation_engine(served, loaded)
    events: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    generator = generate.Generator(*loaded, config)  # the request's settings, shared by its prompts
    generator.templated = chat
    jobs = []
    for position, prompt in enumerate(prompts):
        if not prompt.strip() and not chat:
            raise ApiError(400, f"prompt {position + 1} is empty")
        job = GenerationRequest(
            prompt=prompt,
            prompt_ids=generator.prompt_ids(prompt),
            generator=generator,
            deliver=_deliverer(loop, events, position),
            n=config.num_return_sequences,
            stream=bool(body.get("stream")),
        )
        engine.check(job, generator.limit)
        jobs.append(job)
    try:
        for job in jobs:
            engine.submit(job)
    except QueueFull as exc:
        for job in jobs:
            job.cancel()
        raise ApiError(
            503, f"the server is busy ({exc}); retry shortly", "overloaded", {"Retry-After": "1"}
        ) from None
    answer = Answer(served.name, chat, config.num_return_sequences, len(prompts))
    answer.prompt_tokens = sum(len(job.prompt_ids) for job in jobs)
    if body.get("stream"):
        return StreamingResponse(
            _stream(server, request, jobs, events, answer), media_type="text/event-stream"
        )
    try:
        await _collect(server, request, jobs, events, answer)
    finally:
        for job in jobs:  # a timed-out or disconnected client's sequences stop at the next step
            job.cancel()
    return answer.whole()


def _deliverer(loop, events: asyncio.Queue, position: int):
    """Engine-thread events, handed to the request's event loop."""

    def deliver(kind: str, payload) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, (position, kind, payload))
        except RuntimeError:  # the loop closed (shutdown): nobody is waiting any more
            pass

    return deliver


class Answer:
    """The OpenAI response being built: choice i = prompt i // n, sequence i % n."""

    def __init__(self, model: str, chat: bool, n: int, prompts: int) -> None:
        self.model, self.chat, self.n = model, chat, n
        self.ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.records: dict[int, dict] = {}
        self.expected = n * prompts
        self.prompt_tokens = 0

    def index(self, position: int, sequence: int) -> int:
        return position * self.n + sequence

    def whole(self) -> dict:
        choices = []
        for index in range(self.expected):
            record = self.records[index]
            finish = FINISH_REASONS[record["finish_reason"]]
            if self.chat:
                message = {"role": "assistant", "content": record["completion"]}
                choices.append({"index": index, "message": message, "finish_reason": finish})
            else:
                choices.append(
                    {"index": index, "text": record["completion"], "logprobs": None, "finish_reason": finish}
                )
        completion_tokens = sum(r["generated_tokens"] for r in self.records.values())
        return {
            "id": self.ident,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens,
            },
        }

    def chunk(self, index: int, text: str | None, finish: str | None = None, first: bool = False) -> str:
        if self.chat:
            delta = (
                {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
            )
            choice = {"index": index, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        event = {
            "id": self.ident,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


async def _next_event(server, request: Request, events: asyncio.Queue, deadline: float):
    """The next engine event; a client that went away is ClientGone, a request past
    --request-timeout a 504."""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ApiError(504, f"the request took longer than {server.request_timeout_s:g} s", "timeout")
        try:
            return await asyncio.wait_for(events.get(), min(left, DISCONNECT_POLL_S))
        except asyncio.TimeoutError:
            if await request.is_disconnected():
                raise ClientGone() from None


async def _collect(server, request: Request, jobs, events: asyncio.Queue, answer: Answer) -> None:
    deadline = time.monotonic() + server.request_timeout_s
    while len(answer.records) < answer.expected:
        position, kind, payload = await _next_event(server, request, events, deadline)
        if kind == "error":
            raise ApiError(500, f"generation failed: {payload}", "server_error")
        if kind == "done":
            sequence, record = payload
            answer.records[answer.index(position, sequence)] = record


async def _stream(server, request: Request, jobs, events: asyncio.Queue, answer: Answer):
    """Server-sent events: pieces of text as they are decoded, each choice's finish reason,
    then [DONE]. A client that disconnects cancels its sequences (this generator is closed)."""
    deadline = time.monotonic() + server.request_timeout_s
    try:
        if answer.chat:
            for index in range(answer.expected):
                yield answer.chunk(index, "", first=True)
        finished = 0
        while finished < answer.expected:
            try:
                position, kind, payload = await _next_event(server, request, events, deadline)
            except (ApiError, ClientGone) as exc:
                if isinstance(exc, ApiError):
                    yield f"data: {json.dumps(error_body(exc.message, exc.kind))}\n\n"
                return
            if kind == "error":
                yield f"data: {json.dumps(error_body(f'generation failed: {payload}', 'server_error'))}\n\n"
                return
            sequence, value = payload
            index = answer.index(position, sequence)
            if kind == "piece":
                yield answer.chunk(index, value)
            else:
                finished += 1
                yield answer.chunk(index, None, FINISH_REASONS[value["finish_reason"]])
        yield "data: [DONE]\n\n"
    finally:
        for job in jobs:
            job.cancel()
