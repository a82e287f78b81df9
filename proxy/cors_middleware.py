"""The aiohttp side of CORS (proxy/cors.py has the contract): preflights answered, the origin allowed on the
proxy's own answers."""

from __future__ import annotations

import re

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from proxy.cors import CorsPolicy
from proxy.errors import ProxyError, error_response

ALLOWED_METHODS = "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT"
MAX_AGE_S = "600"
# What a browser asks leave for (`Access-Control-Request-Headers`): header names, comma-separated; echoed
# only when it is that (no value is reflected that could split a header)
_HEADER_NAMES = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?:[ \t]*,[ \t]*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*")


def cors_middleware(policy: CorsPolicy) -> Middleware:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        if origin is None:
            return await handler(request)
        allowed = policy.allow_origin(origin)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return _preflight(request, allowed)
        response = await handler(request)
        if allowed is None or response.prepared or "Access-Control-Allow-Origin" in response.headers:
            return response
        response.headers["Access-Control-Allow-Origin"] = allowed
        if allowed != "*":
            response.headers.add("Vary", "Origin")
        return response

    return cors


def _preflight(request: web.Request, allowed: str | None) -> web.StreamResponse:
    if allowed is None:
        return error_response(ProxyError(400, "Disallowed CORS origin", code="cors_origin"), request.path)
    headers = {
        "Access-Control-Allow-Origin": allowed,
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Max-Age": MAX_AGE_S,
    }
    asked = request.headers.get("Access-Control-Request-Headers", "").strip()
    if asked and _HEADER_NAMES.fullmatch(asked) is not None:
        headers["Access-Control-Allow-Headers"] = asked
    if allowed != "*":
        headers["Vary"] = "Origin"
    return web.Response(status=200, headers=headers, text="OK")
