"""What the simulated replica's route modules share: the app key, vLLM-shaped errors, JSON in and out."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from aiohttp import web

from simulator.openai_api import error_body
from simulator.replica import Replica

T = TypeVar("T")

REPLICA = web.AppKey("replica", Replica)


class HttpError(Exception):
    def __init__(
        self, status: int, message: str, *, param: str | None = None, err_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.err_type = err_type


def json_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")


def json_obj(obj: Any) -> web.Response:
    return json_response(msgspec.json.encode(obj))


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except HttpError as e:
        return json_response(error_body(e.status, e.message, e.param, e.err_type), e.status)
    return response


async def add_replica_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["X-Replica"] = request.app[REPLICA].name


class ClientGone(HttpError):
    """The client's connection closed before its whole body was read: the answer goes nowhere (aiohttp
    drops it quietly), and nothing is logged as a server error."""

    def __init__(self) -> None:
        super().__init__(400, "the connection closed before the whole request body arrived")


async def read_body(request: web.Request) -> bytes:
    """The request's body; ClientGone when its connection went away first. A handler that resumes after
    its connection was cut (a crash fault while a hang held it) gets aiohttp's RuntimeError from the read,
    which would otherwise log a traceback."""
    try:
        return await request.read()
    except RuntimeError:
        if request.transport is None:
            raise ClientGone() from None
        raise


async def decode(request: web.Request, type_: type[T]) -> T:
    """The body as `type_`, its values read as loosely as vLLM's (pydantic's lax mode) reads them:
    `"stream": "true"` or `1` is a stream, `"max_tokens": "16"` a number."""
    try:
        return msgspec.json.decode(await read_body(request), type=type_, strict=False)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise HttpError(400, f"Invalid request body: {e}") from None
    except RecursionError:  # nesting past Python's limit in an untyped field (messages, system, tools)
        raise HttpError(400, "Invalid request body: nested too deeply") from None
