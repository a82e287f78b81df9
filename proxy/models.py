"""`GET /v1/models`: the union of the healthy replicas' models, in first-seen order."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web

from proxy.context import CORE, UPSTREAM
from proxy.errors import ProxyError


async def list_models(request: web.Request) -> web.Response:
    core, session = request.app[CORE], request.app[UPSTREAM]
    healthy = [r.replica_id for r in core.replicas.values() if r.healthy]

    async def models_of(url: str) -> list[dict[str, Any]]:
        try:
            async with session.get(url + "/v1/models", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    return []
                data = await resp.json()
                return list(data.get("data", []))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return []

    seen: dict[str, dict[str, Any]] = {}
    for models in await asyncio.gather(*(models_of(u) for u in healthy)):
        for model in models:
            seen.setdefault(str(model.get("id")), model)
    if not seen:
        raise ProxyError(503, "no healthy replica answered /v1/models", code="no_replica")
    return web.json_response({"object": "list", "data": list(seen.values())})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models)
