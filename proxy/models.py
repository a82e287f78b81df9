"""`GET /v1/models`: the union of the healthy replicas' models, in first-seen order.

Each replica's list is read as the health loop reads it (at most `MAX_PROBE_BYTES`, JSON of OpenAI's shape);
a replica whose answer is larger, not JSON, nested past msgspec's depth or of another shape, and any entry
without a string `id`, is left out, so one broken replica does not break the route for the fleet. Entries
are relayed as the replicas wrote them (not decoded past their `id`).
"""

from __future__ import annotations

import asyncio

import aiohttp
import msgspec
from aiohttp import web

from proxy import forward, health
from proxy.context import CONFIG, CORE, UPSTREAM
from proxy.errors import ProxyError


class _Entries(msgspec.Struct):
    data: list[msgspec.Raw] = msgspec.field(default_factory=list)


class _Entry(msgspec.Struct):
    id: str


_entries = msgspec.json.Decoder(_Entries)
_entry = msgspec.json.Decoder(_Entry)
_PROBLEMS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


async def _models_of(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> list[tuple[str, msgspec.Raw]]:
    """A replica's models as (id, the entry's JSON); none when it failed or answered something else."""
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with session.get(url + "/v1/models", timeout=timeout, headers=headers) as resp:
            if resp.status != 200:
                return []
            body = await health.read_capped(resp, health.MAX_PROBE_BYTES)
            if body is None:
                return []
            entries = _entries.decode(body).data
    except (aiohttp.ClientError, TimeoutError, *_PROBLEMS):
        return []
    found = []
    for raw in entries:
        try:
            found.append((_entry.decode(raw).id, raw))
        except _PROBLEMS:
            continue
    return found


async def list_models(request: web.Request) -> web.Response:
    core, session = request.app[CORE], request.app[UPSTREAM]
    healthy = [r.replica_id for r in core.replicas.values() if r.healthy]
    headers: dict[str, str] = {}
    forward.upstream_auth(headers, request.app[CONFIG])  # (vLLM's `--api-key` guards /v1/models)
    seen: dict[str, msgspec.Raw] = {}
    for models in await asyncio.gather(*(_models_of(session, u, headers) for u in healthy)):
        for model_id, raw in models:
            seen.setdefault(model_id, raw)
    if not seen:
        raise ProxyError(503, "no healthy replica answered /v1/models", code="no_replica")
    body = msgspec.json.encode({"object": "list", "data": list(seen.values())})
    return web.Response(body=body, content_type="application/json")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/models", list_models)
