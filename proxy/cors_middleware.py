"""The aiohttp side of CORS (proxy/cors.py has the contract): preflights answered, the allowed origin on the
app's answers, never on the admin API's."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.auth import ADMIN_PREFIX
from proxy.cors import CorsPolicy, exempt
from proxy.errors import ProxyError, error_response

ALLOWED_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
MAX_AGE_S = "600"
# What a browser asks leave for (`Access-Control-Request-Headers`): header names, comma-separated; echoed
# only when it is that (no value is reflected that could split a header)
_HEADER_NAMES = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")


def allow_origin_on_answers(app: web.Application, policy: CorsPolicy) -> None:
    """Every answer's head (streams too) given the allowed origin as it is prepared."""

    async def allow_origin(request: web.Request, response: web.StreamResponse) -> None:
        if exempt(request.path) or "Access-Control-Allow-Origin" in response.headers:
            return
        for name, value in policy.answer_fields(request.headers.get("Origin")):
            response.headers.add(name, value)

    app.on_response_prepare.append(allow_origin)


@web.middleware
async def admin_not_from_pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A change to the admin API (a POST under `/saga/v1/`) sent with an `Origin` is refused 403: browsers
    send one with every cross-origin POST, and a plain `text/plain` POST needs no preflight, so without
    `admin_token` any web page could add a replica or end sessions (the forty-seventh session's fourth
    review). Tools (curl, SDKs) send none. On every app, whether CORS is on or not."""
    if (
        request.method in ("POST", "PUT", "PATCH", "DELETE")
        and "Origin" in request.headers
        and request.path.startswith(ADMIN_PREFIX)
    ):
        message = "the admin API takes no changes from web pages (a request with an Origin)"
        raise ProxyError(403, message, code="origin")
    return await handler(request)


def preflights(policy: CorsPolicy) -> Middleware:
    """The middleware answering preflights: put where it runs before authentication (a browser sends no
    credentials with one)."""

    @web.middleware
    async def cors_preflight(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (
            request.method == "OPTIONS"
            and "Access-Control-Request-Method" in request.headers
            and "Origin" in request.headers
            and not exempt(request.path)  # (no web page may read or drive the admin API)
        ):
            return _preflight(request, policy.allow_origin(request.headers["Origin"]))
        return await handler(request)

    return cors_preflight


def _preflight(request: web.Request, allowed: str | None) -> web.StreamResponse:
    if allowed is None:
        return error_response(ProxyError(400, "Disallowed CORS origin", code="cors_origin"), request.path)
    headers = {"Access-Control-Allow-Methods": ALLOWED_METHODS, "Access-Control-Max-Age": MAX_AGE_S}
    asked = request.headers.get("Access-Control-Request-Headers", "").strip()
    if asked and _HEADER_NAMES.fullmatch(asked) is not None:
        headers["Access-Control-Allow-Headers"] = asked
    return web.Response(status=200, headers=headers, text="OK")  # (the origin: added as it is prepared)
