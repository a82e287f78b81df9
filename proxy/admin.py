"""The proxy's own routes: `/health`, `/metrics` (Prometheus) and the admin API under `/saga/v1/`.

`GET /saga/v1/state` is the scheduler's datastore snapshot; `GET /saga/v1/replicas` adds each replica's
breaker state and KV capacity.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from proxy.context import CAPACITIES, CORE, GUARDS, METRICS


async def health(request: web.Request) -> web.Response:
    replicas = request.app[CORE].replicas.values()
    healthy = sum(r.healthy for r in replicas)
    status = 200 if healthy else 503
    return web.json_response({"healthy_replicas": healthy, "replicas": len(replicas)}, status=status)


async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[CORE].snapshot())


async def replicas(request: web.Request) -> web.Response:
    core, guards, capacities = request.app[CORE], request.app[GUARDS], request.app[CAPACITIES]
    now = core.clock()
    out: list[dict[str, Any]] = []
    for r in core.replicas.values():
        out.append(
            {
                "replica_id": r.replica_id,
                "healthy": r.healthy,
                "in_flight": r.in_flight,
                "waiting": r.waiting,
                "running": r.running,
                "kv_usage": r.kv_usage,
                "kv_capacity_tokens": capacities.get(r.replica_id),
                "breaker": guards[r.replica_id].breaker_state(now),
            }
        )
    return web.json_response({"replicas": out})


async def metrics_endpoint(request: web.Request) -> web.Response:
    return request.app[METRICS].response(request.app[CORE])


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/saga/v1/state", state)
    app.router.add_get("/saga/v1/replicas", replicas)
