"""The proxy app factory: the aiohttp shell around the scheduler core.

Routes come from route modules, each with an `add_routes(app)` function, listed in `ROUTE_MODULES`; a new
group of routes is one module and one line here. Replica ids are the replica base URLs.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.typedefs import Middleware

from proxy import admin, calls, forward, models, passthrough, response_routes, sessions
from proxy.aiohttp_drain import LIVE, ended_at_the_deadline
from proxy.auth import authenticate
from proxy.cache_key_conversations import CacheKeyConversations
from proxy.config import ProxyConfig
from proxy.context import (
    CHAIN_OWNERS,
    CHAINS,
    CONFIG,
    CORE,
    GATE,
    GUARDS,
    KEY_CONVERSATIONS,
    KV_RESIDENCY,
    METRICS,
    MODELS,
    POOL,
    QUOTE_OWNERS,
    RELEASER,
    REPLICA_CHANGES,
    RESPONSE_OWNERS,
    UPSTREAM,
    WORKERS,
    DecisionGate,
    Guards,
)
from proxy.cors import CorsPolicy
from proxy.cors_middleware import admin_not_from_pages, allow_origin_on_answers, preflights
from proxy.discovery import Resolver, dns_discovery_loop, resolve_with_getaddrinfo
from proxy.errors import add_unknown_route, openai_errors
from proxy.graph_routes import add_graph_routes
from proxy.health import replica_health_loop
from proxy.housekeeping import housekeeping_interval_s, housekeeping_loop
from proxy.kv_events import KvEventSubscriber, kv_events_loop
from proxy.kv_residency import KvResidency
from proxy.load_sync import load_sync_loop
from proxy.metrics import ProxyMetrics
from proxy.model_routing import ModelFilter, ReplicaModels
from proxy.replica_changes import ReplicaChanges
from proxy.response_owners import ChainOwners, QuoteOwners, ResponseOwners
from proxy.retention_release import RetentionReleaser
from proxy.scheduler import SchedulerCore, build_policy
from proxy.scheduler.release import ReleaseQueue
from proxy.session_chain import PrefixChains
from proxy.tenant_metrics import TenantCollector
from proxy.tenant_salt import TENANT_SALTS, tenant_salts
from proxy.upstream_pool import UpstreamPool
from proxy.worker_gather import GATHERER, Gatherer, gather_workers, gathering
from proxy.worker_set import WorkerSet

RESOLVER: web.AppKey[Resolver] = web.AppKey("resolver")

ROUTE_MODULES: list[Callable[[web.Application], None]] = [
    calls.add_routes,
    models.add_routes,
    passthrough.add_routes,
    response_routes.add_routes,
    admin.add_routes,
    sessions.add_routes,
    lambda app: add_graph_routes(app, app[CORE]),  # the predictor's learned graphs
    add_unknown_route,  # last: what no route above serves
]


def upstream_headers(config: ProxyConfig) -> dict[str, str]:
    """What the proxy's own requests to a replica's `/v1/*` carry: the upstream key, if set."""
    headers: dict[str, str] = {}
    forward.upstream_auth(headers, config)
    return headers


async def _upstream_session(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    # Per-call first-byte and idle timeouts are applied in proxy/forward.py.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.connect_timeout_s)
    # auto_decompress=False: compressed answers are relayed byte for byte, with their Content-Encoding.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=60)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=connector, auto_decompress=False, skip_auto_headers=("User-Agent",)
    ) as session:
        app[UPSTREAM] = session
        app[POOL] = UpstreamPool()
        app[RELEASER] = RetentionReleaser(session, config.upstream_api_key)
        app[METRICS].releaser = app[RELEASER]  # its counts are exported on /metrics
        try:
            yield
        finally:
            await app[RELEASER].close()
            app[POOL].close()


async def _close_owner_tables(app: web.Application) -> None:
    for owners in (app[RESPONSE_OWNERS], app[CHAIN_OWNERS], app[QUOTE_OWNERS]):
        if owners is not None:
            owners.close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    tasks = []
    removed = admin.replay_replica_changes(app)  # a restarted worker: the admin changes made before it
    discovery = app[CONFIG].discovery
    if discovery is not None:
        tasks.append(
            asyncio.create_task(
                dns_discovery_loop(app[CORE], app[GUARDS], discovery, app[RESOLVER], managed=removed)
            )
        )
    workers = app[WORKERS]
    if workers is not None and workers.count > 1:  # the other workers' KV reservations, calls and learning
        metrics = app[METRICS]
        tasks.append(
            asyncio.create_task(
                load_sync_loop(app[CORE], workers, app[GATE].apply, on_rings=metrics.count_learning)
            )
        )
    kv = app[KV_RESIDENCY]
    kv_config = app[CONFIG].kv_events
    if kv is not None and kv_config is not None:  # which prefix of each session every replica caches
        tasks.append(asyncio.create_task(kv_events_loop(app[CORE], KvEventSubscriber(kv_config, kv))))
    every_s = housekeeping_interval_s(app[CONFIG].time_scale)  # a second of the core's clock
    tasks.append(asyncio.create_task(housekeeping_loop(app[CORE], app[GATE].apply, every_s)))
    first_round = asyncio.Event()
    tasks.append(
        asyncio.create_task(
            replica_health_loop(
                app[CORE],
                app[UPSTREAM],
                app[GATE].apply,
                app[CONFIG].health_interval_s,
                app[GUARDS],
                app[CONFIG].health_timeout_s,
                app[MODELS],
                first_round,
                upstream_headers(app[CONFIG]),
                None if kv is None else kv.replica_down,  # a replica down may come back with its cache empty
            )
        )
    )
    # Serve once the replicas' health, load and KV capacity are known (admission by KV working set needs
    # the capacity from the first call on), or after one probe timeout when some replica does not answer.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(first_round.wait(), app[CONFIG].health_timeout_s + 1.0)
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def create_app(
    config: ProxyConfig,
    core: SchedulerCore | None = None,
    resolver: Resolver = resolve_with_getaddrinfo,
    workers: WorkerSet | None = None,
) -> web.Application:
    """The proxy app; `core` may be given to share or inspect it (tests), else one is built from config;
    `resolver` resolves the DNS discovery name (tests inject their own); `workers`: which worker this is
    (default: from the supervisor's environment; None there: a single process)."""
    config.validate()
    if config.kv_events is not None:  # keyed by replica id, as `replicas` below
        config = msgspec.structs.replace(config, kv_events=config.kv_events.normalised())
    if workers is None:
        workers = WorkerSet.from_environ()
    replicas = [url.rstrip("/") for url in config.replicas]
    models = ReplicaModels()
    if core is None:
        policy = build_policy(config.policy, seed=config.seed)
        policy.filters.append(ModelFilter(models))  # route by model when replicas serve different ones
        queue = config.queue
        release = None if queue is None else ReleaseQueue(queue, config.tenants, seed=config.seed)
        scale = config.time_scale
        core = SchedulerCore(
            replicas,
            policy,
            time.monotonic if scale == 1.0 else lambda: time.monotonic() * scale,
            session_idle_ttl_s=config.session_idle_ttl_s,
            single_call_session_ttl_s=config.single_call_session_ttl_s,
            max_sessions=config.max_sessions,
            release=release,
            tenants=config.tenants,
        )
    # Authentication is a middleware only when something must be checked: one layer less per call otherwise.
    checked = config.api_keys or config.admin_token is not None  # as proxy/auth.py (validate refuses "")
    middlewares: list[Middleware] = [openai_errors, admin_not_from_pages]
    if checked:
        middlewares.append(authenticate)
    if workers is not None:  # /metrics and the admin API answer for every worker (after the token check)
        middlewares.append(gather_workers)
    # Under `server: aiohttp` the drain's end reaches what is still in progress (first: it answers); under
    # the fast server it serves the routes handed to this app, and costs a dict entry a request.
    middlewares.insert(0, ended_at_the_deadline)
    cors = CorsPolicy.parse(config.cors_allowed_origins)
    if cors is not None:  # outside authentication: a browser's preflight carries no credentials
        middlewares.insert(1, preflights(cors))
    app = web.Application(middlewares=middlewares, client_max_size=config.max_body_bytes)
    app[CONFIG] = config
    app[LIVE] = {}
    if cors is not None:
        allow_origin_on_answers(app, cors)
    salts = tenant_salts(config)
    if salts is not None:
        app[TENANT_SALTS] = salts
    app[CORE] = core
    app[GATE] = DecisionGate()
    app[GUARDS] = Guards(config.guard_params(), config.priority_reprobe_s)
    app[CHAINS] = PrefixChains()
    app[KEY_CONVERSATIONS] = CacheKeyConversations()
    app[MODELS] = models
    app[RESOLVER] = resolver
    app[WORKERS] = workers
    app[RESPONSE_OWNERS] = None
    app[CHAIN_OWNERS] = None
    app[QUOTE_OWNERS] = None
    app[REPLICA_CHANGES] = None
    kv_events = config.kv_events
    app[KV_RESIDENCY] = (
        None if kv_events is None else KvResidency(kv_events.max_sessions, kv_events.max_blocks)
    )
    if workers is not None and workers.count > 1:
        # A worker keeps its tenants' records: one dropping an idle tenant's while another worker still
        # counts it would take that tenant's summed counters on /metrics down (a reset to Prometheus)
        core.tenant_stats.idle_s = math.inf
        app[RESPONSE_OWNERS] = ResponseOwners(workers.directory, workers.index)
        app[CHAIN_OWNERS] = ChainOwners(workers.directory, workers.index)
        app[QUOTE_OWNERS] = QuoteOwners(workers.directory, workers.index, workers.count)
        app[REPLICA_CHANGES] = ReplicaChanges(workers.directory)
        app.on_cleanup.append(_close_owner_tables)
    app[METRICS] = ProxyMetrics()
    app[METRICS].kv_residency = app[KV_RESIDENCY]
    guards = app[GUARDS]
    app[METRICS].passes_checks = lambda replica_id: admin.passes_checks(core, guards, replica_id)
    app[METRICS].registry.register(TenantCollector(core))
    app.cleanup_ctx.extend([_upstream_session, _background])
    if workers is not None:
        app[GATHERER] = Gatherer(workers)
        app.cleanup_ctx.append(gathering)
    for add_routes in ROUTE_MODULES:
        add_routes(app)
    return app
