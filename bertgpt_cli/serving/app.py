"""`bgcli serve`'s HTTP layer (FastAPI): OpenAI-compatible completions, chat and embeddings,
and the CLI's own commands as task endpoints whose records equal the CLI's JSONL.

Every user mistake is a 4xx in OpenAI's error shape with one line; overload is a 503 with
Retry-After; one access line per request goes to stderr.
"""

from __future__ import annotations

import asyncio
import base64
import sys
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from ..errors import BgcliError, UsageError, first_line
from ..inference import engine
from ..inference.embed import EmbedConfig, load_embedder
from ..io.console import info
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
from .completions import generation_endpoint
from .continuous import ContinuousEngine
from .metrics import ServerMetrics
from .requests import ApiError, ClientGone, error_body, json_body, texts_of


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
        from concurrent.futures import ThreadPoolExecutor

        torch_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bgcli-torch")
        self.models = {name: ServedModel(name, spec, settings, torch_worker) for name, spec in specs.items()}
        self.settings = settings
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.request_timeout_s = request_timeout_s
        self.quiet = quiet
        self.batchers: dict[tuple, Batcher] = {}
        self.configs: dict[tuple, Any] = {}  # (model, command, options) -> the command's config
        self.engines: dict[str, ContinuousEngine] = {}  # model name -> its generation scheduler
        self.metrics = ServerMetrics()

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

    async def generation_engine(self, served: ServedModel, loaded) -> ContinuousEngine:
        """The model's continuous-batching scheduler, started on first use."""
        if served.name not in self.engines:
            from .continuous import Limits

            s = self.settings
            limits = Limits(s.max_sequences, s.kv_cache_tokens, s.max_queue)
            self.engines[served.name] = ContinuousEngine(
                *loaded, limits, served.worker, self.metrics, served.name
            )
        return self.engines[served.name]

    def batcher(self, served: ServedModel, key: tuple, make_processor) -> Batcher:
        if key not in self.batchers:
            s = self.settings
            size_histogram = self.metrics.batch_size.labels(served.name, key[1])
            queue_gauge = self.metrics.queue.labels(served.name)
            self.batchers[key] = Batcher(
                make_processor(),
                served.worker,
                s.batch_wait_ms / 1000,
                s.max_batch,
                s.max_queue,
                on_batch=size_histogram.observe,
                on_queue=queue_gauge.set,
            )
        return self.batchers[key]

    async def run_records(self, request: Request, served: ServedModel, key: tuple, make_processor, records):
        """Good records through the model's batcher; every record's result, in order."""
        good = [r for r in records if r.error is None]
        results: list = []
        if good:
            batcher = self.batcher(served, key, make_processor)
            submitted = batcher.submit(good)
            try:
                results, size = await asyncio.wait_for(submitted, self.request_timeout_s)
            except asyncio.TimeoutError:
                raise ApiError(
                    504, f"the request took longer than {self.request_timeout_s:g} s", "timeout"
                ) from None
            request.state.batch = size
        done = iter(results)
        return [next(done) if r.error is None else None for r in records]


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

    @app.get("/metrics")
    async def metrics():
        """Prometheus text format; behind --api-key like every path but /health (give the
        scraper the key: `authorization: {credentials: KEY}` in its scrape config)."""
        body, content_type = server.metrics.exposition()
        return Response(body, media_type=content_type)

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
        self.endpoints: set[str] | None = None  # the app's route paths, read on the first request

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
        state = scope.get("state") or {}
        seconds = time.perf_counter() - started
        self._count(scope, state.get("model") or "", status["code"], seconds)
        if not self.server.quiet:
            latency = seconds * 1000
            print(
                f"{scope['method']} {scope['path']} {status['code']} {latency:.0f}ms "
                f"model={state.get('model') or '-'} batch={state.get('batch') or '-'}",
                file=sys.stderr,
                flush=True,
            )

    def _count(self, scope, model: str, status: int, seconds: float) -> None:
        path = scope["path"]
        # Only the app's own routes as labels: a scanner's random URLs must not grow the series.
        if self.endpoints is None:
            self.endpoints = {route.path for route in scope["app"].routes}
        endpoint = path if path in self.endpoints else "other"
        metrics = self.server.metrics
        metrics.requests.labels(endpoint, model, str(status)).inc()
        if path != "/metrics":
            metrics.latency.labels(endpoint, model).observe(seconds)


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
