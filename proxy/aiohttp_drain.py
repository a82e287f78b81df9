"""The end of the drain under `server: aiohttp`: what is still in progress gets the proxy's own end.

Contract: with `server: aiohttp` the app has `ended_at_the_deadline` first among its middlewares; on leaving,
the server calls `end_at_the_deadline(app, drain_s)` once `shutdown_grace_s` is over (aiohttp's own wait on
its handlers is longer: twice its timeout, and no end at all for a timeout of 0). Then, as the fast
server does at its deadline (`FastServer.cut`): calls still waiting in the proxy are refused (503
`shutting_down`, with Retry-After), and each request still in progress is cancelled and answered by this
middleware: a 503 where no answer began, the route's error event where a server-sent event stream did (the
Responses API's numbered after the last event sent). A whole answer half sent can only be cut.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.context import CONFIG, CORE, GATE
from proxy.errors import ProxyError, error_response, retry_after, stopping_event
from proxy.forward import DOWNSTREAM, AiohttpDownstream

# Requests whose handler is running, by id (a request is a mapping: not hashable)
LIVE = web.AppKey("live_requests", dict[int, web.Request])
_CUT = web.RequestKey("cut_by_the_drain", str)  # the message a request was cut with
SETTLE_S = 0.1  # after the refusals of waiting calls, before the cut: their handlers answer in a turn or two


def drain_over_message(within_s: float) -> str:
    return f"the proxy is stopping (its drain time, shutdown_grace_s = {within_s:g} s, is over)"


@web.middleware
async def ended_at_the_deadline(request: web.Request, handler: Handler) -> web.StreamResponse:
    live, key = request.app[LIVE], id(request)
    live[key] = request
    try:
        return await handler(request)
    except asyncio.CancelledError:
        message = request.get(_CUT)
        if message is None:  # the client hung up (aiohttp's handler cancellation)
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # taken as the drain's end: answered below
        return await _the_proxys_end(request, message)
    finally:
        del live[key]


async def _the_proxys_end(request: web.Request, message: str) -> web.StreamResponse:
    when = retry_after(request.app[CONFIG].retry_after_s)
    stopping = ProxyError(503, message, code="shutting_down", headers={"Retry-After": when})
    downstream: AiohttpDownstream | None = request.get(DOWNSTREAM)
    if downstream is None or downstream.response is None:
        return error_response(stopping, request.path)
    response = downstream.response
    if not response.prepared:
        return error_response(stopping, request.path)
    if not (response.content_type or "").startswith("text/event-stream"):
        raise asyncio.CancelledError  # a whole answer half sent
    number = downstream.next_sequence_number()
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write(stopping_event(request.path, message, number))
        await response.write_eof()
    return response


def end_at_the_deadline(app: web.Application, within_s: float) -> None:
    """The drain time is over: waiting calls refused now, what is still in progress ended a moment later."""
    message = drain_over_message(within_s)
    gate = app[GATE]
    gate.stopping = True  # what ends now is the proxy's doing, not the clients' (logged and counted so)
    gate.apply(app[CORE].refuse_waiting(message))
    asyncio.get_running_loop().call_later(SETTLE_S, _cut, app, message)


def _cut(app: web.Application, message: str) -> None:
    for request in list(app[LIVE].values()):
        task = request.task
        if not task.done():
            request[_CUT] = message
            task.cancel()
