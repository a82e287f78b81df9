"""Who may call the proxy: optional client API keys (each mapped to a tenant) and the admin token.

Contract: with `api_keys` set, every route but `/health` (and `/ping`), `/metrics` and the admin API needs a
listed key, as `Authorization: Bearer <key>` or, where that header is absent, as `x-api-key: <key>` (how
Anthropic's SDKs and Claude Code send theirs), else a 401 OpenAI error; the key's tenant becomes the call's
tenant (a tenant header cannot override it) and the client's key, in either header, is never forwarded to a
replica. With `admin_token` set, every `/saga/v1/*` route needs `Authorization: Bearer <admin_token>`. Keys
are compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.context import CONFIG
from proxy.errors import ProxyError
from proxy.paths import ADMIN_PREFIX as ADMIN_PREFIX  # (its home before)

OPEN_PATHS = frozenset({"/health", "/ping", "/metrics"})
TENANT = web.RequestKey("tenant", str)  # set on requests authenticated by a client API key


def _bearer(request: web.Request) -> str | None:
    return _bearer_of(request.headers.get("Authorization", ""))


def _bearer_of(auth: str) -> str | None:
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def client_key(authorization: str | None, x_api_key: str | None) -> str | None:
    """The key a client presents: its bearer token, else (no `Authorization` at all) its `x-api-key`."""
    if authorization is not None:
        return _bearer_of(authorization)
    if x_api_key is None:
        return None
    return x_api_key.strip() or None


def _matches(token: str, expected: str) -> bool:
    # aiohttp reads a byte that is not UTF-8 as a lone surrogate: compared as the byte it was, not a 500
    return hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected.encode())


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    config = request.app[CONFIG]
    path = request.path
    if path in OPEN_PATHS:
        return await handler(request)
    token = _bearer(request)
    if path.startswith(ADMIN_PREFIX):
        if config.admin_token is not None and (token is None or not _matches(token, config.admin_token)):
            raise ProxyError(
                401, "the admin API needs `Authorization: Bearer <admin token>`", code="invalid_api_key"
            )
        return await handler(request)
    if config.api_keys:
        key = client_key(request.headers.get("Authorization"), request.headers.get("x-api-key"))
        request[TENANT] = client_tenant(config.api_keys, key)
    return await handler(request)


def client_tenant(api_keys: dict[str, str], token: str | None) -> str:
    """The tenant a client API key names; a 401 ProxyError for a missing or unknown key."""
    tenant = None
    if token is not None:
        for key, name in api_keys.items():
            if _matches(token, key):
                tenant = name
    if tenant is None:
        raise ProxyError(401, "missing or unknown API key", code="invalid_api_key")
    return tenant


def call_tenant(
    api_keys: dict[str, str] | None, authorization: str | None, x_api_key: str | None = None
) -> str | None:
    """For servers without aiohttp's middleware (proxy/fast_server.py): None when no keys are configured."""
    return client_tenant(api_keys, client_key(authorization, x_api_key)) if api_keys else None
