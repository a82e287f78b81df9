"""`GET /v1/models`: the union of the healthy replicas' models, in first-seen order.

Each replica's list is read as the health loop reads it (at most `MAX_PROBE_BYTES`, JSON of OpenAI's shape,
its first `MAX_MODELS` entries); a replica whose answer is larger, not JSON, nested past msgspec's depth or
of another shape, and any entry without a string `id`, is left out, so one broken replica does not break the
route for the fleet. Entries are relayed as the replicas wrote them (not decoded past their `id`).
The union is read once for every request arriving while it is read, and served again for `LISTING_TTL_S`
while the healthy replicas are the same (the route is open to every client: each request read every
replica's list, so a client asking in a loop took the event loop from the calls).
Credentials: with `upstream_api_key` or `api_keys` the replicas are asked with the proxy's key; with neither,
with the client's own `Authorization` or `x-api-key`, as its calls pass them (vLLM's `--api-key` guards this
route too: asked without one, every replica refused and clients got a 503), and a union is served again only
to a request with the same credentials. When every replica refuses them (401 or 403), so does the proxy.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Callable, Coroutine
from typing import Any

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
LISTING_TTL_S = 1.0  # how long a union read is served again (while the healthy replicas are the same)
_CLIENT_CREDENTIALS = ("Authorization", "x-api-key")
# A union's healthy replicas, and the credentials it was read with (header, value)
_Key = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]


_REFUSED = (401, 403)


async def _models_of(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> list[tuple[str, msgspec.Raw]] | int:
    """A replica's models as (id, the entry's JSON); none when it failed or answered something else; its
    status when it refused the credentials (`_REFUSED`)."""
    try:
        timeout = aiohttp.ClientTimeout(total=5)
        async with session.get(url + "/v1/models", timeout=timeout, headers=headers) as resp:
            if resp.status in _REFUSED:
                return resp.status
            if resp.status != 200:
                return []
            body = await health.read_capped(resp, health.MAX_PROBE_BYTES)
            if body is None:
                return []
            entries = _entries.decode(body).data
    except (aiohttp.ClientError, TimeoutError, *_PROBLEMS):
        return []
    found = []
    for raw in entries[: health.MAX_MODELS]:
        try:
            found.append((_entry.decode(raw).id, raw))
        except _PROBLEMS:
            continue
    return found


class _Listing:
    """The union last read (for which healthy replicas, when), and the read in flight."""

    def __init__(self) -> None:
        self.body = b""
        self.replicas: _Key = ((), ())
        self.read_at = -math.inf
        self.reading: asyncio.Task[bytes] | None = None
        self.reading_for: _Key = ((), ())

    def read(self, replicas: _Key, union: Callable[[], Coroutine[Any, Any, bytes]]) -> asyncio.Task[bytes]:
        """The read of `replicas`' union (with those credentials) in flight, `union()` started unless one
        is."""
        task = self.reading
        if task is not None and self.reading_for == replicas:
            return task
        task = self.reading = asyncio.ensure_future(union())
        self.reading_for = replicas
        task.add_done_callback(lambda done: self._read(done, replicas))
        return task

    def _read(self, task: asyncio.Task[bytes], replicas: _Key) -> None:
        if self.reading is task:
            self.reading = None
        if task.cancelled() or task.exception() is not None:  # (retrieved: no waiter may be left to)
            return
        self.body, self.replicas, self.read_at = task.result(), replicas, asyncio.get_running_loop().time()


_LISTING = web.AppKey("models_listing", _Listing)


async def _union(session: aiohttp.ClientSession, healthy: tuple[str, ...], headers: dict[str, str]) -> bytes:
    seen: dict[str, msgspec.Raw] = {}
    refused = 0
    for models in await asyncio.gather(*(_models_of(session, u, headers) for u in healthy)):
        if isinstance(models, int):
            refused = models
            continue
        for model_id, raw in models:
            seen.setdefault(model_id, raw)
    if not seen and refused:
        raise ProxyError(
            refused,
            "the replicas refused this request's credentials for /v1/models (vLLM's --api-key: send its key, "
            "or give the proxy `upstream_api_key`)",
            code="invalid_api_key",
        )
    if not seen:
        raise ProxyError(503, "no healthy replica answered /v1/models", code="no_replica")
    return msgspec.json.encode({"object": "list", "data": list(seen.values())})


async def list_models(request: web.Request) -> web.Response:
    core, session, listing = request.app[CORE], request.app[UPSTREAM], request.app[_LISTING]
    healthy = tuple(r.replica_id for r in core.replicas.values() if r.healthy)
    config = request.app[CONFIG]
    headers: dict[str, str] = {}
    if not (config.api_keys or config.upstream_api_key):  # the client's key, as its calls pass it on
        headers = {name: request.headers[name] for name in _CLIENT_CREDENTIALS if name in request.headers}
    forward.upstream_auth(headers, config)  # (vLLM's `--api-key` guards /v1/models)
    key: _Key = (healthy, tuple(sorted(headers.items())))
    now = asyncio.get_running_loop().time()
    if listing.replicas == key and now - listing.read_at < LISTING_TTL_S:
        body = listing.body
    else:
        # shielded: a client hanging up does not cancel the read the others wait on
        body = await asyncio.shield(listing.read(key, functools.partial(_union, session, healthy, headers)))
    return web.Response(body=body, content_type="application/json")


def add_routes(app: web.Application) -> None:
    app[_LISTING] = _Listing()
    app.router.add_get("/v1/models", list_models)
