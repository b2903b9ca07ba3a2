"""What every endpoint of `bgcli serve` shares: the OpenAI error shape and reading a JSON body
held to --max-body-mb."""

from __future__ import annotations

import asyncio
import json

from fastapi import Request


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers=None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def error_body(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


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
