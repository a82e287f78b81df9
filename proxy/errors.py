"""OpenAI-style error responses, so agents' OpenAI clients raise the right exception with a clear message."""

from __future__ import annotations

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

# The `type` OpenAI's clients map each status to.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "timeout",
}


class ProxyError(Exception):
    """Raised anywhere in a handler; the middleware answers it as an OpenAI error."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> bytes:
    err = {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}
    return msgspec.json.encode({"error": err})


def error_response(err: ProxyError) -> web.Response:
    return web.Response(
        status=err.status,
        body=error_body(err.status, err.message, param=err.param, code=err.code),
        content_type="application/json",
    )


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns ProxyError and aiohttp's own HTTP errors (404, 405, 413, ...) into OpenAI error bodies."""
    try:
        return await handler(request)
    except ProxyError as e:
        return error_response(e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return error_response(ProxyError(e.status, e.reason if e.text is None else e.text))
