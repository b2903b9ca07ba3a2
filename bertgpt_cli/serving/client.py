"""The `--server URL` path of the inference commands: records go to a running `bgcli serve`
instead of a model loaded here. Same output, bad-record handling and exit codes as the local
path; nothing here imports torch, transformers or datasets (a call costs about `--help`)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from ..errors import BgcliError, UsageError
from ..io.console import info
from ..io.records import RecordError, stream_to_writer

SERVER_ENV = "BGCLI_SERVER"
API_KEY_ENV = "BGCLI_API_KEY"
CONNECT_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 600.0
BUSY_RETRIES = 5  # a 503 is retried after the server's Retry-After, this many times
MAX_RETRY_WAIT_S = 10.0

# Flags that say how to read input, load a model or write output: never request options.
# The server refuses the same ones (serving.command_config); it reads records by --text-field
# itself, while a client sends each record's text under "text", so it never sends that one.
SERVER_SIDE_FIELDS = frozenset(
    {
        "texts",
        "input",
        "input_format",
        "format",
        "quiet",
        "debug",
        "model",
        "offline",
        "revision",
        "trust_remote_code",
        "batch_size",
        "device",
        "precision",
        "server",
        "server_fallback",
    }
)
LOCAL_FIELDS = SERVER_SIDE_FIELDS | {"text_field"}


def server_url(config) -> str | None:
    url = getattr(config, "server", None) or os.environ.get(SERVER_ENV)
    return url.rstrip("/") if url else None


def request_options(config) -> dict[str, Any]:
    """The command's own options (top_k, all_scores, ...) that differ from their defaults."""
    options = {}
    for f in dataclasses.fields(config):
        if "kind" not in f.metadata or f.name in LOCAL_FIELDS:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        value = getattr(config, f.name)
        if value != default:
            options[f.name] = value
    return options


class ServerBusy(BgcliError):
    """The server stayed overloaded (503) through every retry: a runtime failure, exit 1."""


class RequestTooLarge(UsageError):
    """HTTP 413: the request holds more than the server takes at once (split it)."""


def call(url: str, path: str, body: dict | None = None, timeout: float = REQUEST_TIMEOUT_S) -> dict:
    """One JSON request; a busy server (503) is retried after its Retry-After, a few times;
    the server's one-line error message as a UsageError (RequestTooLarge for a 413)."""
    import time
    import urllib.error  # here, not at the top: every command imports this module
    import urllib.request

    data = json.dumps(body).encode() if body is not None else None
    for attempt in range(BUSY_RETRIES + 1):
        request = urllib.request.Request(url + path, data=data, method="POST" if body is not None else "GET")
        request.add_header("Content-Type", "application/json")
        key = os.environ.get(API_KEY_ENV)
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            message = f"bgcli server at {url}: {_error_message(exc)}"
            if exc.code == 413:
                raise RequestTooLarge(message) from None
            if exc.code != 503:
                raise UsageError(message) from None
            if attempt == BUSY_RETRIES:
                raise ServerBusy(f"{message} ({BUSY_RETRIES + 1} tries); try again later") from None
            time.sleep(_retry_after(exc))
    raise AssertionError("unreachable")


def _retry_after(exc) -> float:
    try:
        return min(float(exc.headers.get("Retry-After", 1)), MAX_RETRY_WAIT_S)
    except (TypeError, ValueError):
        return 1.0


def _error_message(exc) -> str:
    try:
        return json.loads(exc.read())["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {exc.code} {exc.reason}"


def server_models(url: str) -> list[str] | None:
    """The model names a server offers, or None when nothing answers at `url`."""
    import urllib.error

    try:
        health = call(url, "/health", timeout=CONNECT_TIMEOUT_S)
    except (urllib.error.URLError, OSError, ValueError):
        return None
    if "models" not in health:  # the server wants a key this client did not send
        raise UsageError(f"the bgcli server at {url} needs its API key: set ${API_KEY_ENV}")
    return list(health["models"])


def remote_or_local(command: str, config, records, writer, window: int) -> bool:
    """Run the records through the server when one is configured; False = run locally."""
    url = server_url(config)
    if url is None:
        return False
    models = server_models(url)
    problem = None
    if models is None:
        problem = f"no bgcli server answers at {url}; start one with `bgcli serve -m NAME=MODEL`"
    elif config.model not in models:
        problem = (
            f"the bgcli server at {url} has no model '{config.model}' (it has: {', '.join(models) or 'none'})"
        )
    if problem:
        if config.server_fallback:
            info(f"{problem}; loading the model here (--server-fallback)")
            return False
        raise UsageError(f"{problem}, or drop --server (--server-fallback loads the model here instead)")
    options = request_options(config)

    def process(batch) -> list:
        body = {"model": config.model, "text": [{"text": r.text, **r.fields} for r in batch], **options}
        try:
            answer = call(url, f"/v1/{command}", body)
        except RequestTooLarge:
            if len(batch) == 1:
                raise
            half = len(batch) // 2  # the server takes fewer at once: send halves
            return process(batch[:half]) + process(batch[half:])
        return regroup(answer["data"], answer["per_input"], len(batch))

    stream_to_writer(records, process, writer, window=window)
    return True


def regroup(data: list[dict], per_input: list[int], count: int) -> list:
    """The server's flat records back into one result per input record (a list, or an error)."""
    if len(per_input) != count:
        raise UsageError(f"the bgcli server answered {len(per_input)} results for {count} records")
    results, position = [], 0
    for n in per_input:
        group = data[position : position + n]
        position += n
        if len(group) == 1 and "error" in group[0]:
            results.append(RecordError(group[0]["error"]))
        else:
            results.append(group)
    return results
