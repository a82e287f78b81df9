"""What the simulated replica's route modules share: the app key, vLLM-shaped errors, JSON in and out."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from simulator.lax import loosen
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


def validation_error(message: str, param: str | None, value: Any = None) -> HttpError:
    """A 400 worded as vLLM's VLLMValidationError: the parameter (and value) appended and named in `param`."""
    extras = [f"{k}={v}" for k, v in (("parameter", param), ("value", value)) if v is not None]
    return HttpError(400, f"{message} ({', '.join(extras)})" if extras else message, param=param)


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
    `"stream": "yes"` or `1` is a stream, `"max_tokens": " 16"` or `true` a number (simulator.lax). A
    body that decodes strictly (almost all) costs one pass; only the others are decoded again, loosely."""
    raw = await read_body(request)
    try:
        try:
            return msgspec.json.decode(raw, type=type_)
        except msgspec.ValidationError:
            return msgspec.convert(loosen(msgspec.json.decode(raw), type_), type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise HttpError(400, f"Invalid request body: {e}", param=_error_param(str(e))) from None
    except RecursionError:  # nesting past Python's limit in an untyped field (messages, system, tools)
        raise HttpError(400, "Invalid request body: nested too deeply") from None


_ERROR_PATH = re.compile(r" - at `\$((?:\.\w+|\[\d+\])*)`$")
_MISSING = re.compile(r"missing required field `(\w+)`")


def _error_param(message: str) -> str | None:
    """pydantic's `loc` as vLLM names it in `param` (`body.messages.0.content`) for msgspec's path
    (`$.messages[0].content`); a missing field's path ends with its name."""
    at, missing = _ERROR_PATH.search(message), _MISSING.search(message)
    if at is None and missing is None:
        return None
    path = re.sub(r"\[(\d+)\]", r".\1", at.group(1)) if at is not None else ""
    return "body" + path + (f".{missing.group(1)}" if missing is not None else "")
