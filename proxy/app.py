"""The aiohttp shell around the scheduler core: parse just enough, ask the core, forward, report back.

Routes: `POST /v1/chat/completions` and `POST /v1/completions` (forwarded), `GET /v1/models` (the union of the
replicas' models), `GET /health`, `GET /metrics` (the proxy's own Prometheus metrics) and `GET
/saga/v1/state` (the scheduler's datastore). Replica ids are the replica base URLs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from proxy import forward
from proxy.config import ProxyConfig
from proxy.directives import with_retention
from proxy.errors import ProxyError, openai_errors
from proxy.graph_routes import add_graph_routes
from proxy.health import replica_health_loop
from proxy.identity import decode_call, identify
from proxy.metrics import ProxyMetrics
from proxy.prompt_shape import estimated_tokens, prefix_hashes
from proxy.scheduler import Decision, Dispatch, Reject, RequestInfo, SchedulerCore, build_policy

log = logging.getLogger("saga.proxy")


class DecisionGate:
    """Hands the core's decisions to the handlers waiting for them.

    Today every decision answers the event that caused it; with an admission queue, a decision may answer a
    call that arrived earlier, and handlers wait here until theirs comes.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Decision]] = {}

    def expect(self, request_id: str) -> asyncio.Future[Decision]:
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def apply(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            future = self._waiting.pop(decision.request_id, None)
            if future is not None and not future.done():
                future.set_result(decision)


CONFIG = web.AppKey("config", ProxyConfig)
CORE = web.AppKey("core", SchedulerCore)
GATE = web.AppKey("gate", DecisionGate)
METRICS = web.AppKey("metrics", ProxyMetrics)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)

_request_ids = itertools.count()
_id_prefix = f"saga-{os.getpid():x}"


def _bad_request(message: str) -> ProxyError:
    return ProxyError(400, message, code="invalid_request_body")


async def proxy_call(request: web.Request) -> web.StreamResponse:
    app = request.app
    core, gate, metrics = app[CORE], app[GATE], app[METRICS]
    body = await request.read()
    if not body:
        raise _bad_request("request body is empty; expected a JSON object")
    try:
        fields = decode_call(body)
    except msgspec.ValidationError as e:
        raise _bad_request(f"invalid request body: {e}") from e
    except msgspec.DecodeError as e:
        raise _bad_request(f"request body is not valid JSON: {e}") from e

    request_id = f"{_id_prefix}-{next(_request_ids)}"
    prompt = fields.messages or fields.prompt  # a view into the body: copied only when hashed
    who = identify(request.headers, fields, request_id)
    info = RequestInfo(
        request_id=request_id,
        session_id=who.session_id,
        arrived_at=core.clock(),
        tenant_id=who.tenant_id,
        agent_type=who.agent_type,
        model=fields.model,
        prompt_chars=len(body),
        prompt_tokens=estimated_tokens(prompt),
        prefix_hashes=prefix_hashes(bytes(prompt)) if core.policy.wants_prefix_hashes else (),
        stream=fields.stream,
        session_inferred=who.session_inferred,
    )
    pending = gate.expect(request_id)
    gate.apply(core.request_arrived(info))
    decision = await pending

    while True:
        if isinstance(decision, Reject):
            metrics.rejected.inc()
            raise ProxyError(decision.status, f"request not routed: {decision.reason}", code="no_replica")
        assert isinstance(decision, Dispatch)
        extra = {"X-Session-ID": who.session_id}
        if decision.priority is not None:
            extra["X-Vllm-Priority"] = str(decision.priority)
        headers = forward.forwarded_headers(request.headers, extra)
        sent = body
        if decision.retain_ttl_s is not None:
            sent = with_retention(body, who.session_id, decision.retain_ttl_s)
        try:
            upstream = await forward.open_upstream(
                app[UPSTREAM], decision.replica_id + request.path, sent, headers
            )
            break
        except forward.UpstreamUnreachable as e:
            log.warning("replica unreachable, trying another: %s", e)
            metrics.upstream_failures.labels(decision.replica_id).inc()
            pending = gate.expect(request_id)
            gate.apply(core.dispatch_failed(request_id))
            decision = await pending

    usage = None
    try:
        response, usage = await forward.relay(
            request,
            upstream,
            {"X-Saga-Replica": decision.replica_id, "X-Session-ID": who.session_id},
            lambda: gate.apply(core.first_token(request_id)),
        )
        metrics.responses.labels(decision.replica_id, str(upstream.status)).inc()
        return response
    except (ConnectionResetError, asyncio.CancelledError):
        metrics.client_disconnects.inc()
        raise
    except (aiohttp.ClientError, TimeoutError) as e:
        # The replica failed mid-answer: the bytes already sent cannot be taken back, so end the stream.
        log.warning("replica %s failed mid-answer: %r", decision.replica_id, e)
        metrics.upstream_failures.labels(decision.replica_id).inc()
        raise ProxyError(502, f"replica failed while answering: {e!r}", code="upstream_error") from e
    finally:
        gate.apply(core.request_finished(request_id, usage))


async def list_models(request: web.Request) -> web.Response:
    """The union of the healthy replicas' models, in first-seen order."""
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


async def health(request: web.Request) -> web.Response:
    replicas = request.app[CORE].replicas.values()
    healthy = sum(r.healthy for r in replicas)
    status = 200 if healthy else 503
    return web.json_response({"healthy_replicas": healthy, "replicas": len(replicas)}, status=status)


async def state(request: web.Request) -> web.Response:
    return web.json_response(request.app[CORE].snapshot())


async def metrics_endpoint(request: web.Request) -> web.Response:
    return request.app[METRICS].response(request.app[CORE])


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=config.connect_timeout_s, sock_read=config.read_timeout_s
    )
    # auto_decompress=False: compressed answers are relayed byte for byte, with their Content-Encoding.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
    ) as session:
        app[UPSTREAM] = session
        yield


async def _background(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(
        replica_health_loop(app[CORE], app[UPSTREAM], app[GATE].apply, app[CONFIG].health_interval_s)
    )
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def create_app(config: ProxyConfig, core: SchedulerCore | None = None) -> web.Application:
    """The proxy app; `core` may be given to share or inspect it (tests), else one is built from config."""
    config.validate()
    replicas = [url.rstrip("/") for url in config.replicas]
    if core is None:
        policy = build_policy(config.policy, seed=config.seed)
        core = SchedulerCore(replicas, policy, time.monotonic, session_idle_ttl_s=config.session_idle_ttl_s)
    app = web.Application(middlewares=[openai_errors], client_max_size=config.max_body_bytes)
    app[CONFIG] = config
    app[CORE] = core
    app[GATE] = DecisionGate()
    app[METRICS] = ProxyMetrics()
    app.cleanup_ctx.extend([_upstream_session, _background])
    app.router.add_post("/v1/chat/completions", proxy_call)
    app.router.add_post("/v1/completions", proxy_call)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/saga/v1/state", state)
    add_graph_routes(app, core)
    return app
