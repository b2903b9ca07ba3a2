"""`bgcli serve`'s HTTP layer (FastAPI): OpenAI-compatible completions, chat and embeddings,
and the CLI's own commands as task endpoints whose records equal the CLI's JSONL.

Every user mistake is a 4xx in OpenAI's error shape with one line; overload is a 503 with
Retry-After; one access line per request goes to stderr.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ..errors import BgcliError, UsageError, first_line
from ..inference import engine
from ..inference.embed import EmbedConfig, load_embedder
from ..io.console import info
from ..io.records import RecordError
from ..models.heads import TASK_COMMANDS
from .batcher import (
    Batcher,
    Overloaded,
    ServedModel,
    ServeSettings,
    TooLarge,
    UnknownModel,
    command_config,
    input_records,
    options_key,
    output_records,
)


def listening_socket(host: str, port: int):
    """The server's socket, bound here rather than by uvicorn, so a port in use (or an address
    this machine does not have) is one line and exit 2 instead of uvicorn's log and exit 3."""
    import errno
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"port {port} on {host} is in use by another program; pick another with --port"
            ) from None
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror}); check --host and --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def run_app(server: Server, sock, shutdown_timeout: float = 30.0) -> None:
    """uvicorn on the bound socket, until SIGINT / SIGTERM; then the requests in flight get
    `shutdown_timeout` seconds to finish."""
    import uvicorn

    config = uvicorn.Config(
        CutOffAtShutdown(create_app(server)),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=shutdown_timeout,
    )
    uvicorn.Server(config).run(sockets=[sock])


class CutOffAtShutdown:
    """Past --shutdown-timeout uvicorn cancels the requests still running, and logged each one's
    CancelledError as "Exception in ASGI application" with a traceback. Here the cut-off is one
    log line, and a request whose response had not started gets a 503 instead of a bare close."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        import asyncio

        started = False

        async def tracked_send(message) -> None:
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except asyncio.CancelledError:
            if scope.get("type") != "http":
                raise
            from ..io.console import warn

            warn(f"{scope.get('method')} {scope.get('path')} cut off at shutdown (--shutdown-timeout)")
            if not started:
                await _try_send_503(send)


async def _try_send_503(send) -> None:
    import json

    body = json.dumps(error_body("the server is shutting down; retry later", "server_shutting_down")).encode()
    try:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
            }
        )
        await send({"type": "http.response.body", "body": body})
    except Exception:  # noqa: BLE001 - the connection may already be gone; nothing else to do
        pass


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def error_body(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class Server:
    """The registry of served models and their batchers, shared by every request."""

    def __init__(
        self,
        specs: dict[str, str],
        settings: ServeSettings,
        api_key: str | None,
        max_body_bytes: int,
        request_timeout_s: float,
        quiet: bool,
    ) -> None:
        self.models = {name: ServedModel(name, spec, settings) for name, spec in specs.items()}
        self.settings = settings
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.request_timeout_s = request_timeout_s
        self.quiet = quiet
        self.batchers: dict[tuple, Batcher] = {}
        self.configs: dict[tuple, Any] = {}  # (model, command, options) -> the command's config

    def config(self, command: str, served: ServedModel, options: dict):
        """The command's config for these options, built and checked once per distinct request."""
        key = (served.name, command, options_key(options))
        if key not in self.configs:
            self.configs[key] = command_config(command, served, options)
        return self.configs[key]

    def preload(self) -> None:
        """Load each model for the command its head is for (a classifier for classify, a bare
        encoder for embeddings: models/heads.py)."""
        from ..models.heads import serving_command
        from ..models.resolution import load_config, resolve_model

        for name, served in self.models.items():
            resolved = resolve_model(served.spec, offline=served.settings.offline)
            command = serving_command(load_config(resolved))
            info(f"loading {name} ({served.spec}) for {command}")
            if command == "embed":
                config = EmbedConfig(**served.base_values())
                served.load("embed", lambda config=config: load_embedder(config))
                continue
            module = engine(command)
            config = command_config(command, served, {})
            served.load(command, lambda module=module, config=config: module.load(config))

    def authorized(self, request: Request) -> bool:
        return not self.api_key or request.headers.get("authorization") == f"Bearer {self.api_key}"

    def model(self, name: Any) -> ServedModel:
        if not isinstance(name, str) or not name:
            raise ApiError(400, 'pass "model": the name of one of the served models (GET /v1/models)')
        if name not in self.models:
            raise ApiError(404, f"no model '{name}' is served here (served: {', '.join(self.models)})")
        return self.models[name]

    async def loaded(self, served: ServedModel, key: str, make):
        if key in served.loaded:  # warm: no trip through the worker thread (busy with a batch)
            return served.loaded[key]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(served.worker, served.load, key, make)

    def batcher(self, served: ServedModel, key: tuple, make_processor) -> Batcher:
        if key not in self.batchers:
            s = self.settings
            self.batchers[key] = Batcher(
                make_processor(), served.worker, s.batch_wait_ms / 1000, s.max_batch, s.max_queue
            )
        return self.batchers[key]

    async def run_records(
        self, request: Request, served: ServedModel, key: tuple, make_processor, records, per_record: int = 1
    ):
        """Good records through the model's batcher; every record's result, in order.
        `per_record`: what each weighs against --max-queue (completions per prompt)."""
        good = [r for r in records if r.error is None]
        results: list = []
        if good:
            batcher = self.batcher(served, key, make_processor)
            submitted = batcher.submit(good, len(good) * per_record)
            try:
                results, size = await asyncio.wait_for(submitted, self.request_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(
                    504, f"the request took longer than {self.request_timeout_s:g} s", "timeout"
                ) from None
            request.state.batch = size
        done = iter(results)
        return [next(done) if r.error is None else None for r in records]


BODY_STALL_TIMEOUT_S = 30.0  # a client that stops sending its body mid-way is cut off


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to answer, nothing to log."""


async def read_body(request: Request) -> bytes:
    """The body, counted as it arrives: a chunked body (no Content-Length) is held to
    --max-body-mb too, and a body that stops arriving is cut off after a while."""
    from starlette.requests import ClientDisconnect

    limit = request.app.state.server.max_body_bytes
    chunks, size = [], 0
    stream = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), BODY_STALL_TIMEOUT_S)
        except StopAsyncIteration:
            return b"".join(chunks)
        except asyncio.TimeoutError:
            raise ApiError(408, f"the request body stopped arriving for {BODY_STALL_TIMEOUT_S:g} s") from None
        except ClientDisconnect:
            raise ClientGone() from None
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the request body is over the limit of {limit} bytes (--max-body-mb)")
        chunks.append(chunk)


async def json_body(request: Request) -> dict:
    raw = await read_body(request)
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


def texts_of(body: dict, *keys: str) -> list:
    """The request's input: a string or a non-empty list, under the first key present."""
    key = next((k for k in keys if k in body), None)
    if key is None:
        raise ApiError(400, f'pass the input as "{keys[0]}": a string or a list')
    value = body.pop(key)
    for other in keys:
        body.pop(other, None)
    items = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(items, list) or not items:
        raise ApiError(400, f'"{key}" must be a string or a non-empty list')
    return items


def create_app(server: Server) -> FastAPI:
    app = FastAPI(title="bgcli serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_middleware(GuardAndLog, server=server)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(error_body(exc.message, exc.kind), exc.status, headers=exc.headers)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded):
        body = error_body(f"the server is busy ({exc}); retry shortly", "overloaded")
        return JSONResponse(body, 503, headers={"Retry-After": "1"})

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, exc: ClientGone):
        return Response(status_code=400)  # nobody reads it; the access line notes the request

    @app.exception_handler(TooLarge)
    async def too_large(request: Request, exc: TooLarge):
        return JSONResponse(error_body(str(exc), "invalid_request_error"), 413)

    @app.exception_handler(BgcliError)
    async def usage_error(request: Request, exc: BgcliError):
        status = 404 if isinstance(exc, UnknownModel) else 400
        return JSONResponse(error_body(str(exc), "invalid_request_error"), status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse(error_body(first_line(exc), "invalid_request_error"), 400)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        print(f"error: {type(exc).__name__}: {first_line(exc)}", file=sys.stderr, flush=True)
        return JSONResponse(error_body(f"internal error: {first_line(exc)}", "server_error"), 500)

    @app.get("/health")
    async def health(request: Request):
        """Ready or not, for anyone (load balancers); the model names and what each has loaded
        only for clients with the key. Local paths never leave the server (its log has them)."""
        body: dict[str, Any] = {"status": "ok"}
        if server.authorized(request):
            body["models"] = {n: {"loaded": sorted(m.loaded)} for n, m in server.models.items()}
        return body

    @app.get("/v1/models")
    async def list_models():
        data = [{"id": name, "object": "model", "created": 0, "owned_by": "bgcli"} for name in server.models]
        return {"object": "list", "data": data}

    for command in TASK_COMMANDS:
        app.add_api_route(f"/v1/{command}", _task_endpoint(server, command), methods=["POST"])

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        return await embeddings_endpoint(server, request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await generation_endpoint(server, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await generation_endpoint(server, request, chat=True)

    return app


class GuardAndLog:
    """A plain ASGI middleware (FastAPI's @app.middleware adds a task and a copy per request):
    refuses a missing API key or an oversized body before the body is read, and writes one
    access line per request."""

    def __init__(self, app, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        request = Request(scope)
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        refusal = _refusal(self.server, request)
        if refusal is not None:
            await refusal(scope, receive, send_and_note)
        else:
            await self.app(scope, receive, send_and_note)
        if not self.server.quiet:
            state = scope.get("state") or {}
            latency = (time.perf_counter() - started) * 1000
            print(
                f"{scope['method']} {scope['path']} {status['code']} {latency:.0f}ms "
                f"model={state.get('model') or '-'} batch={state.get('batch') or '-'}",
                file=sys.stderr,
                flush=True,
            )


def _refusal(server: Server, request: Request) -> JSONResponse | None:
    """Checks before the body is read: the API key and the declared body size."""
    if request.url.path != "/health" and not server.authorized(request):
        return JSONResponse(
            error_body("missing or wrong API key (Authorization: Bearer KEY)", "auth_error"), 401
        )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > server.max_body_bytes:
        message = (
            f"the request body is {int(length)} bytes; the limit is {server.max_body_bytes} (--max-body-mb)"
        )
        return JSONResponse(error_body(message, "invalid_request_error"), 413)
    return None


def _task_endpoint(server: Server, command: str):
    async def endpoint(request: Request):
        body = await json_body(request)
        served = server.model(body.pop("model", None))
        request.state.model = served.name
        items = texts_of(body, "text", "input")
        module = engine(command)
        config = server.config(command, served, body)
        loaded = await server.loaded(served, command, lambda: module.load(config))
        records = input_records(items, config.text_field)
        key = (served.name, command, options_key(body))
        results = await server.run_records(
            request, served, key, lambda: module.processor(loaded, config), records
        )
        data, per_input = output_records(records, results)
        return {"model": served.name, "data": data, "per_input": per_input}

    endpoint.__name__ = f"task_{command.replace('-', '_')}"
    return endpoint


# OpenAI-compatible ---------------------------------------------------------------------------


async def embeddings_endpoint(server: Server, request: Request):
    import numpy as np

    body = await json_body(request)
    served = server.model(body.pop("model", None))
    request.state.model = served.name
    items = texts_of(body, "input")
    if not all(isinstance(t, str) and t.strip() for t in items):
        raise ApiError(400, '"input" must be a non-empty string or a list of non-empty strings')
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, '"encoding_format" must be float or base64')
    config = EmbedConfig(**served.base_values())
    embedder = await server.loaded(served, "embed", lambda: load_embedder(config))
    if body.get("dimensions") not in (None, embedder.dimension):
        raise ApiError(
            400, f"model '{served.name}' gives {embedder.dimension} dimensions; drop \"dimensions\""
        )
    records = input_records(items, "text")

    def embed(batch) -> list:
        return [[{"embedding": v}] for v in embedder.encode([r.text for r in batch])]

    results = await server.run_records(request, served, (served.name, "embed"), lambda: embed, records)
    data = []
    for index, result in enumerate(results):
        vector = np.asarray(result[0]["embedding"], dtype="<f4")
        value = base64.b64encode(vector.tobytes()).decode() if encoding == "base64" else vector.tolist()
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(len(ids) for ids in embedder.tokenizer(items)["input_ids"])
    return {
        "object": "list",
        "data": data,
        "model": served.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


FINISH_REASONS = {"eos": "stop", "stop": "stop", "length": "length"}


def generation_options(body: dict) -> dict[str, Any]:
    """OpenAI sampling parameters as `bgcli generate` options (temperature 0 = greedy)."""
    temperature = body.get("temperature", 1.0)
    if temperature is None:
        temperature = 1.0
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ApiError(400, '"temperature" must be a number >= 0')
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, '"stop" must be a string or a list of strings')
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


async def generation_endpoint(server: Server, request: Request, chat: bool):
    from ..inference import generate

    body = await json_body(request)
    served = server.model(body.get("model"))
    request.state.model = served.name
    options = generation_options(body)
    config = server.config("generate", served, options)
    loaded = await server.loaded(served, "generate", lambda: generate.load(config))
    tokenizer = loaded[1]
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, '"messages" must be a non-empty list of {role, content} objects')
        if not tokenizer.chat_template:
            raise ApiError(400, f"model '{served.name}' has no chat template; use /v1/completions")
        prompts = [tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)]
    else:
        prompts = texts_of(body, "prompt")
        if not all(isinstance(p, str) for p in prompts):
            raise ApiError(400, '"prompt" must be a string or a list of strings')
    if body.get("stream"):
        if len(prompts) != 1 or options.get("num_return_sequences", 1) > 1:
            raise ApiError(400, "streaming answers one prompt with n = 1")
        return StreamingResponse(
            stream_events(server, served, loaded, config, prompts[0], chat), media_type="text/event-stream"
        )

    def make_processor():
        generator = generate.Generator(*loaded, config)
        generator.templated = chat

        def run(records):
            if config.seed is not None:
                from transformers import set_seed

                set_seed(config.seed)
            return generator.generate(records)

        return run

    records = input_records(prompts, "text")
    key = (served.name, "chat" if chat else "completions", options_key(options))
    n = options.get("num_return_sequences", 1)
    results = await server.run_records(request, served, key, make_processor, records, per_record=n)
    choices, completion_tokens = [], 0
    for outcome in results:
        if isinstance(outcome, RecordError) or outcome is None:
            raise ApiError(400, str(outcome) if outcome else "empty prompt")
        for record in outcome:
            completion_tokens += record["generated_tokens"]
            finish = FINISH_REASONS[record["finish_reason"]]
            index = len(choices)
            if chat:
                choices.append(
                    {
                        "index": index,
                        "message": {"role": "assistant", "content": record["completion"]},
                        "finish_reason": finish,
                    }
                )
            else:
                choices.append(
                    {"index": index, "text": record["completion"], "logprobs": None, "finish_reason": finish}
                )
    prompt_tokens = sum(len(tokenizer(p, add_special_tokens=not chat)["input_ids"]) for p in prompts)
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24],
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": served.name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


async def stream_events(server: Server, served: ServedModel, loaded, config, prompt: str, chat: bool):
    """Server-sent events, one per decoded piece of text, then the finish reason and [DONE]."""
    from transformers import TextIteratorStreamer

    from ..inference import generate

    model, tokenizer = loaded
    generator = generate.Generator(model, tokenizer, config)
    generator.templated = chat
    streamer = TextIteratorStreamer(
        tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=server.request_timeout_s
    )
    outcome: dict[str, Any] = {}

    def work() -> None:
        import torch

        try:
            if config.seed is not None:
                from transformers import set_seed

                set_seed(config.seed)
            ids = generator.encode(prompt)
            tensor = torch.tensor([ids], device=model.device)
            with torch.inference_mode():
                output = model.generate(
                    input_ids=tensor,
                    attention_mask=torch.ones_like(tensor),
                    generation_config=generator.generation_config,
                    streamer=streamer,
                )
            outcome["record"] = generator.describe(ids, output[0, len(ids) :].tolist(), prompt)
        except Exception as exc:  # reported in the stream, never a dead connection
            outcome["error"] = first_line(exc)
            streamer.end()

    loop = asyncio.get_running_loop()
    job = loop.run_in_executor(served.worker, work)
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(text: str | None, finish: str | None, first: bool = False) -> str:
        if chat:
            delta = (
                {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
            )
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        event = {
            "id": ident,
            "object": kind,
            "created": int(time.time()),
            "model": served.name,
            "choices": [choice],
        }
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"

    if chat:
        yield chunk("", None, first=True)
    pieces = iter(streamer)
    while True:
        piece = await loop.run_in_executor(None, next, pieces, None)
        if piece is None:
            break
        if piece:
            yield chunk(piece, None)
    await job
    if "error" in outcome:
        yield f"data: {json.dumps(error_body(outcome['error'], 'server_error'))}\n\n"
    else:
        yield chunk(None, FINISH_REASONS[outcome["record"]["finish_reason"]])
    yield "data: [DONE]\n\n"
