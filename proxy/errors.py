"""OpenAI-style error responses, so agents' OpenAI clients raise the right exception with a clear message.

Every refusal the proxy itself makes has one shape, `{"error": {"message", "type", "param", "code"}}`: errors
raised in handlers (`ProxyError`), aiohttp's routing and body-size errors (404, 405, 413), and the HTTP
parser's own refusals (a malformed request line, a header over aiohttp's size limit), which aiohttp would
otherwise answer in text/plain with the offending bytes quoted back. Replicas' own errors are relayed as
they are. `sse_error_event` is the same shape as one server-sent event, for streams that already started.
Requests to the Anthropic Messages API (`/v1/messages...`) get Anthropic's shape instead
(`{"type": "error", "error": {"type", "message"}}`, and `event: error` in a stream): `refusal_body`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec
from aiohttp import web, web_protocol, web_server
from aiohttp.typedefs import Handler
from aiohttp.web_request import BaseRequest

from proxy.context import CONFIG, METRICS
from proxy.sse_scan import RESPONSES_PREFIX
from proxy.worker_set import LOCAL_HEADER

log = logging.getLogger("saga.proxy")

# A request body sent compressed (Content-Encoding other than identity): the proxy reads the JSON to schedule
# the call and vLLM does not decompress requests either, so it is refused, the same way by both servers.
COMPRESSED_BODY = "request bodies must not be compressed: send the JSON without a Content-Encoding"


def compressed_body(encoding: str) -> bool:
    return encoding.strip().lower() not in ("", "identity")


# A Transfer-Encoding naming a coding besides chunked (gzip, deflate, ...): both servers' parsers dechunk but
# would pass the coded bytes on as the body, so it is refused (RFC 9112 6.1: a 501).
UNKNOWN_TRANSFER_CODING = "transfer codings other than chunked are not supported: send the body without one"


def coded_transfer(value: str) -> bool:
    return any(coding.strip().lower() not in ("chunked", "identity", "") for coding in value.split(","))


# An `Expect` other than 100-continue in an HTTP/1.1 request: a 417 on both servers (RFC 9110 10.1.1).
UNKNOWN_EXPECTATION = "the only expectation the proxy meets is Expect: 100-continue"


# The `type` OpenAI's clients map each status to.
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    417: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    501: "invalid_request_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "timeout",
}


class ProxyError(Exception):
    """Raised anywhere in a handler; the middleware answers it as an OpenAI error."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = dict(headers or {})


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> bytes:
    err = {"message": message, "type": _TYPES.get(status, "api_error"), "param": param, "code": code}
    return msgspec.json.encode({"error": err})


def sse_error_event(status: int, message: str, *, code: str | None = None) -> bytes:
    return b"data: " + error_body(status, message, code=code) + b"\n\n"


# The Anthropic Messages API (`/v1/messages`, vLLM's and Claude Code's) has its own error shape and types: its
# clients raise the right exception, and end a stream with an error, only when they get it.
_ANTHROPIC_PREFIX = "/v1/messages"
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def anthropic_error_body(status: int, message: str) -> bytes:
    kind = _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return msgspec.json.encode({"type": "error", "error": {"type": kind, "message": message}})


def refusal_body(path: str, err: ProxyError) -> bytes:
    """The proxy's refusal of a request to `path`, in the shape that route's clients read."""
    if path.startswith(_ANTHROPIC_PREFIX):
        return anthropic_error_body(err.status, err.message)
    return error_body(err.status, err.message, param=err.param, code=err.code)


def responses_error_event(status: int, message: str, code: str, sequence_number: int | None = None) -> bytes:
    """A Responses API stream's error event (`event: error`, `{"type": "error", "code", "message", "param",
    "sequence_number"}`, which clients typed on the Responses events read), carrying the chat-shaped `error`
    object too: the `openai` SDKs raise an APIError with its message on any event with an `error` object,
    where on a typed `error` event alone they go on and fail for want of `response.completed`, the message
    unread. `sequence_number`: the one after the replica's last event, when the proxy read it (left out
    when not)."""
    err = {"message": message, "type": _TYPES.get(status, "api_error"), "param": None, "code": code}
    event: dict[str, object] = {"type": "error", "code": code, "message": message, "param": None}
    if sequence_number is not None:
        event["sequence_number"] = sequence_number
    event["error"] = err
    return b"event: error\ndata: " + msgspec.json.encode(event) + b"\n\n"


_MID_ANSWER = "the replica failed mid-answer"
_OPENAI_MID_ANSWER_EVENT = sse_error_event(502, _MID_ANSWER, code="upstream_error")
_ANTHROPIC_MID_ANSWER_EVENT = b"event: error\ndata: " + anthropic_error_body(502, _MID_ANSWER) + b"\n\n"
_STALLED = (
    "the replica sent nothing for longer than the stream idle timeout (stream_idle_timeout_s): "
    "the answer was cut short"
)
_OPENAI_STALLED_EVENT = sse_error_event(504, _STALLED, code="upstream_timeout")
_ANTHROPIC_STALLED_EVENT = b"event: error\ndata: " + anthropic_error_body(504, _STALLED) + b"\n\n"


def mid_answer_event(path: str, stalled: bool = False, sequence_number: int | None = None) -> bytes:
    """The event that ends a stream to `path` whose replica failed mid-answer (or, `stalled`, went silent
    past the stream idle timeout), in that route's shape (`sequence_number`: a Responses API event's)."""
    if path.startswith(_ANTHROPIC_PREFIX):
        return _ANTHROPIC_STALLED_EVENT if stalled else _ANTHROPIC_MID_ANSWER_EVENT
    if path.startswith(RESPONSES_PREFIX):
        if stalled:
            return responses_error_event(504, _STALLED, "upstream_timeout", sequence_number)
        return responses_error_event(502, _MID_ANSWER, "upstream_error", sequence_number)
    return _OPENAI_STALLED_EVENT if stalled else _OPENAI_MID_ANSWER_EVENT


def stopping_event(path: str, message: str, sequence_number: int | None = None) -> bytes:
    """The event that ends a stream to `path` the proxy cuts as it stops (its drain time over)."""
    if path.startswith(_ANTHROPIC_PREFIX):
        return b"event: error\ndata: " + anthropic_error_body(503, message) + b"\n\n"
    if path.startswith(RESPONSES_PREFIX):
        return responses_error_event(503, message, "shutting_down", sequence_number)
    return sse_error_event(503, message, code="shutting_down")


def error_response(err: ProxyError, path: str = "") -> web.Response:
    return web.Response(
        status=err.status,
        body=refusal_body(path, err),
        content_type="application/json",
        headers=err.headers,
    )


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turns ProxyError and aiohttp's own HTTP errors (404, 405, 413, ...) into OpenAI error bodies
    (Anthropic's on its routes); refuses a compressed body on any route before it is read (aiohttp would
    decode it: a passthrough route answered a 500 when it could not)."""
    if compressed_body(request.headers.get("Content-Encoding", "")):
        _count(request, "unsupported_content_encoding")
        refusal = error_response(
            ProxyError(415, COMPRESSED_BODY, code="unsupported_content_encoding"), request.path
        )
        refusal.force_close()  # the body is left unread: aiohttp would try to decode it for the next request
        return refusal
    if coded_transfer(request.headers.get("Transfer-Encoding", "")):
        _count(request, "unsupported_transfer_encoding")
        error = ProxyError(501, UNKNOWN_TRANSFER_CODING, code="unsupported_transfer_encoding")
        refusal = error_response(error, request.path)
        refusal.force_close()  # the body is left unread
        return refusal
    try:
        return await handler(request)
    except ProxyError as e:
        _count(request, e.code or f"http_{e.status}")
        if e.status in (429, 503) and "Retry-After" not in e.headers:  # every such refusal says when to retry
            config = request.app.get(CONFIG)
            if config is not None:
                e.headers["Retry-After"] = retry_after(config.retry_after_s)
        return error_response(e, request.path)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None  # a 405 says what is allowed
        error = ProxyError(e.status, e.reason if e.text is None else e.text, headers=allow)
        config = request.app.get(CONFIG)
        if e.status == 413 and config is not None:  # said (and counted) as the fast server says it
            error = ProxyError(413, too_large_message(config.max_body_bytes), code="request_too_large")
        _count(request, error.code or f"http_{e.status}")
        e.__traceback__ = None  # (the raising frames may hold what holds it: no cycle for a rare full GC)
        return error_response(error, request.path)


def add_unknown_route(app: web.Application) -> None:
    """Last of the routes: every path no other route serves gets the proxy's 404, or its 405 naming what the
    path's routes allow (as aiohttp's would). aiohttp's own refusal builds, per request, a route holding its
    exception and a bound method of itself: cycles only a full collection frees, and those are rare here
    (proxy/server.py): a flood of unknown routes, open to any client (`POST /health`, `GET /v1/x`), held
    ~870 bytes a request, 1 GB and more at full rate, until the next one."""
    resource = app.router.add_resource("/{unknown_path:.*}")

    async def unknown(request: web.Request) -> web.StreamResponse:
        allowed: set[str] = set()
        for other in request.app.router.resources():
            if other is not resource:
                allowed |= (await other.resolve(request))[1]
        if allowed:
            raise ProxyError(405, "405: Method Not Allowed", headers={"Allow": ",".join(sorted(allowed))})
        raise ProxyError(404, "404: Not Found")

    resource.add_route("*", unknown)


def too_large_message(limit: int) -> str:
    return f"request body over the proxy's limit of {limit} bytes"


def retry_after(seconds: float) -> str:
    """A `Retry-After` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


def _count(request: web.Request, cause: str) -> None:
    metrics = request.app.get(METRICS)
    # Asked by another worker (an admin request it broadcast, a view it gathers): the worker the client
    # asked counts the one refusal the client sees (the workers' /metrics are summed).
    if metrics is not None and not between_workers(request):
        metrics.errors.labels(cause).inc()


def between_workers(request: BaseRequest) -> bool:
    """Asked by another worker for its own answer (`LOCAL_HEADER`, over a Unix socket: a Unix socket's name
    is a str, a TCP one's a tuple), not by a client."""
    if LOCAL_HEADER not in request.headers:
        return False
    transport = request.transport
    return transport is not None and isinstance(transport.get_extra_info("sockname"), str)


class _OpenAIErrorRequestHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering its own refusals in the OpenAI shape.

    `handle_error` is what aiohttp calls for a request its parser rejected (status 400 and the like) and for
    an exception a handler let escape (500). Parser refusals are the client's fault: logged at INFO without a
    traceback and without the offending bytes. A 500 is a proxy bug: logged with its traceback.
    """

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 and exc is not None:
            self.log_exception("Error handling request", exc_info=exc)
            text = "internal error in the proxy"
        else:
            # (no address over the fast server's private socket: the client is the fast server's)
            client = request.remote or "a client of the fast server"
            log.info("refused a malformed HTTP request from %s: %s", client, type(exc).__name__)
            text = f"malformed HTTP request ({type(exc).__name__ if exc else 'bad request'})"
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error response")
        response = web.Response(status=status, body=error_body(status, text), content_type="application/json")
        response.force_close()
        return response


class OpenAIErrorServer(web_server.Server):
    """An aiohttp low-level server whose connections use `_OpenAIErrorRequestHandler`."""

    def __call__(self) -> web_protocol.RequestHandler:
        kwargs: dict[str, Any] = self._kwargs
        return _OpenAIErrorRequestHandler(self, loop=self._loop, **kwargs)


class OpenAIErrorAppRunner(web.AppRunner):
    """`web.AppRunner` serving the app through `OpenAIErrorServer`, its refusals before routing reshaped."""

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        server.__class__ = OpenAIErrorServer  # same state, our connection factory
        server.request_handler = _refusals_before_middleware(server.request_handler)
        return server


_ServerHandler = Callable[[BaseRequest], Awaitable[web.StreamResponse]]


def _refusals_before_middleware(handler: _ServerHandler) -> _ServerHandler:
    """The app's handler, with what aiohttp refuses before any middleware runs answered in the OpenAI shape:
    its check of `Expect` (run for every route, an unknown one too) raises a 417 whose text/plain body
    quotes the value back."""

    async def handle(request: BaseRequest) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as e:
            # (the app makes every request a web.Request; the check is for the type checker)
            if e.status < 400 or not isinstance(request, web.Request):
                raise
            _count(request, "unsupported_expectation" if e.status == 417 else f"http_{e.status}")
            if e.status == 417:
                error = ProxyError(417, UNKNOWN_EXPECTATION, code="unsupported_expectation")
            else:
                error = ProxyError(e.status, e.reason)
            refusal = error_response(error, request.path)
            refusal.force_close()  # the body is left unread
            return refusal

    return handle
