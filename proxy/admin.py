"""The proxy's own routes: `/health`, `/metrics` (Prometheus) and the admin API under `/saga/v1/`.

`GET /saga/v1/state` is the scheduler's datastore snapshot; `GET /saga/v1/replicas` adds each replica's
breaker state, KV capacity and whether it is draining. `POST /saga/v1/replicas` (`{"url": ...}`) adds a
replica (or has one being drained take new calls again: `"undrained": true`); `POST /saga/v1/replicas/drain`
stops new calls to one (calls in flight finish; its sessions rebind elsewhere) and
`POST /saga/v1/replicas/remove` takes it out of the pool.

With workers, /metrics, /saga/v1/state and /saga/v1/replicas answer for all of them (the merges below;
proxy/worker_gather.py) and the POSTs are applied on every worker; a worker restarted later applies them at
start (proxy/replica_changes.py).
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from proxy.config import replica_url_problem, same_replica
from proxy.context import (
    CHAINS,
    CORE,
    GATE,
    GUARDS,
    KEY_CONVERSATIONS,
    KV_RESIDENCY,
    METRICS,
    MODELS,
    REPLICA_CHANGES,
    WORKERS,
    Guards,
    down_stats,
)
from proxy.errors import ProxyError
from proxy.metrics import merge_expositions
from proxy.metrics_carry import CarriedMetrics
from proxy.replica_changes import ChangeKind, ReplicaChangesError
from proxy.scheduler import SchedulerCore
from proxy.worker_gather import Gathered, add_gathered_get, json_answer, merge_replica_rows, sum_numbers

# With workers: this worker's side of the figures carried for workers that did not answer or restarted
CARRIED_METRICS: web.AppKey[CarriedMetrics] = web.AppKey("carried_metrics")
log = logging.getLogger("saga.admin")


def passes_checks(core: SchedulerCore, guards: Guards, replica_id: str) -> bool:
    """Whether the replica passes its health checks: the core's view says so, or (a replica being drained,
    which the core keeps out of new work) its guard does. `/saga/v1/replicas`' `healthy` and
    `saga_replica_healthy`."""
    view = core.replicas.get(replica_id)
    return view is not None and (
        view.healthy or (replica_id in core.draining and guards[replica_id].healthy(core.clock()))
    )


async def health(request: web.Request) -> web.Response:
    """200 while a replica takes new calls (a readiness check): `healthy_replicas` counts those, not the
    ones an operator drains (`draining`), whose own checks may pass (`/saga/v1/replicas`,
    `saga_replica_healthy`)."""
    core = request.app[CORE]
    replicas = core.replicas.values()
    healthy = sum(r.healthy for r in replicas)
    status = 200 if healthy else 503
    body = {"healthy_replicas": healthy, "replicas": len(replicas), "draining": len(core.draining)}
    return web.json_response(body, status=status)


async def state(request: web.Request) -> web.Response:
    # `cache_keys`: conversations told apart under one `prompt_cache_key` (proxy/cache_key_conversations.py)
    # `quoted_answers.taken_up`: conversations that went on from a session's answer they quote (a compaction)
    keys, quotes = request.app[KEY_CONVERSATIONS], request.app[CHAINS].quotes
    shown = {"shared": keys.found, "split_calls": keys.split}
    quoted = {"taken_up": quotes.taken}
    return web.json_response({**request.app[CORE].snapshot(), "cache_keys": shown, "quoted_answers": quoted})


async def replicas(request: web.Request) -> web.Response:
    core, guards = request.app[CORE], request.app[GUARDS]
    models = request.app[MODELS]
    now = core.clock()
    out: list[dict[str, Any]] = []
    kv = request.app[KV_RESIDENCY]
    # With workers each core's `in_flight` counts the others' calls as last synced: the gathered listing sums
    # each worker's own share (`merge_replica_rows`), so it must know that part (without it, every call was
    # counted once per worker: 4 calls listed as 8 with two).
    workers = request.app.get(WORKERS) is not None
    for r in core.replicas.values():
        out.append(
            {
                "replica_id": r.replica_id,
                "healthy": passes_checks(core, guards, r.replica_id),  # (drained: may pass them)
                "in_flight": r.in_flight,
                **({"foreign_in_flight": r.foreign_in_flight} if workers else {}),
                "waiting": r.waiting,
                "running": r.running,
                "kv_usage": r.kv_usage,
                "kv_capacity_tokens": r.kv_capacity_tokens or None,  # from the scrape; None: not published
                # no /metrics page of it read yet: the capacity above is the other replicas' smallest
                "kv_capacity_assumed": guards[r.replica_id].capacity_assumed,
                # times slower than the fastest replica, calls for calls alike; 1.0: not measured slower
                # (stealing.slower_above; proxy/scheduler/replica_speed.py)
                "slowness": r.slowness,
                "breaker": guards[r.replica_id].breaker_state(now),
                "probe_error": guards[r.replica_id].probe_error or None,  # why its last probe failed
                "draining": r.replica_id in core.draining,
                "models": sorted(models.by_replica.get(r.replica_id, ())),
                # what its ranks' KV events told this proxy (None: not subscribed; proxy/kv_residency.py)
                "kv_events": None if kv is None else kv.report(r.replica_id),
            }
        )
    return web.json_response({"replicas": out})


async def metrics_endpoint(request: web.Request) -> web.Response:
    response = request.app[METRICS].response(request.app[CORE])
    carried = request.app.get(CARRIED_METRICS)
    if carried is not None and isinstance(response.body, bytes):  # what a scrape saw: carried from here on
        carried.remember(response.body)
    return response


def merge_metrics(gathered: Gathered, carried: CarriedMetrics | None = None) -> web.Response:
    """The workers' expositions summed; with `carried`, the figures of workers that did not answer and of
    earlier incarnations too, so no counter goes down (proxy/metrics_carry.py)."""
    texts = [a.body.decode("utf-8") for a in gathered.answers]
    try:
        merged = texts if carried is None else carried.texts(texts, gathered.missing)
        body = merge_expositions(merged, gathered.count, reporting=len(texts))
    except ValueError as e:  # a carried file that is no exposition (edited by hand?): the live figures alone
        log.warning("the workers' carried metrics are unreadable, left out: %s", e)
        body = merge_expositions(texts, gathered.count)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def merge_state(gathered: Gathered) -> web.Response:
    """Counts summed (admission's too), one row per replica (`REPLICA_FIELDS`), the rest the first's."""
    states = [state for _, state in gathered.json()]
    merged = sum_numbers(states)
    merged["replicas"] = merge_replica_rows(s.get("replicas", []) for s in states)
    return json_answer(merged, gathered)


def merge_replicas(gathered: Gathered) -> web.Response:
    rows = merge_replica_rows(answer.get("replicas", []) for _, answer in gathered.json())
    return json_answer({"replicas": rows}, gathered)


class _ReplicaUrl(msgspec.Struct, forbid_unknown_fields=True):
    url: str


async def _replica_url(request: web.Request) -> str:
    try:
        url = msgspec.json.decode(await request.read(), type=_ReplicaUrl).url.rstrip("/")
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise ProxyError(400, f'expected {{"url": "http://host:port"}}: {e}', param="url") from e
    problem = replica_url_problem(url)
    if problem is not None:  # a replica the proxy could never reach: not added to be probed as down forever
        raise ProxyError(400, f"url {problem}; expected http(s)://host:port", param="url")
    # another spelling of a replica in the set (`http://LOCALHOST:08000`) acts on that one
    return same_replica(url, request.app[CORE].replicas) or url


async def add_replica(request: web.Request) -> web.Response:
    url = await _replica_url(request)
    core = request.app[CORE]
    known, undrained = url in core.replicas, url in core.draining  # adding a draining one undoes the drain
    # a replica already in the set is undrained, not added: recorded as added, a restarted worker took a
    # discovered replica for the admin API's, and kept it after the name stopped listing it
    apply_replica_change(request.app, "undrained" if known else "added", url)
    log.info("replica %s %s through the admin API", url, "undrained" if undrained else "added")
    answer = {"url": url, "added": not known, "undrained": undrained}
    return web.json_response(answer, status=200 if known else 201)


async def drain_replica(request: web.Request) -> web.Response:
    url = await _replica_url(request)
    core = request.app[CORE]
    if url not in core.replicas:
        raise ProxyError(404, "no such replica", param="url", code="unknown_replica")
    apply_replica_change(request.app, "draining", url)
    log.info("replica %s draining", url)
    return web.json_response({"url": url, "draining": True, "in_flight": core.replicas[url].in_flight})


async def remove_replica(request: web.Request) -> web.Response:
    url = await _replica_url(request)
    if url not in request.app[CORE].replicas:
        raise ProxyError(404, "no such replica", param="url", code="unknown_replica")
    apply_replica_change(request.app, "removed", url)
    log.info("replica %s removed through the admin API", url)
    return web.json_response({"url": url, "removed": True})


def apply_replica_change(app: web.Application, kind: ChangeKind, url: str, *, record: bool = True) -> None:
    """One admin change of the replica set, applied to this process and, with workers, recorded for a worker
    that starts later (proxy/replica_changes.py)."""
    core, guards = app[CORE], app[GUARDS]
    if kind == "added":
        core.add_replica(url)
    elif kind == "undrained":
        core.draining.discard(url)
    elif kind == "draining":
        core.draining.add(url)
        app[GATE].apply(core.replica_stats(down_stats(url)))
    else:
        core.remove_replica(url)
        guards.forget(url)
    changes = app[REPLICA_CHANGES]
    if record and changes is not None:
        try:
            changes.record(kind, url)
        except ReplicaChangesError as e:  # applied here all the same; only a later restart would miss it
            log.error("replica %s %s but not recorded for restarted workers: %s", url, kind, e)


def replay_replica_changes(app: web.Application) -> set[str]:
    """A starting worker applies the replica set changes the admin API made before it started; returns the
    replicas removed that way (DNS discovery must not bring them back, as it would not in the workers that
    saw the removal)."""
    changes = app[REPLICA_CHANGES]
    if changes is None:
        return set()
    try:
        state = changes.load()
    except ReplicaChangesError as e:
        log.error("starting from the configured replicas: %s", e)
        return set()
    plan: tuple[tuple[ChangeKind, list[str]], ...] = (
        ("added", state.added),
        ("draining", state.draining),
        ("removed", state.removed),
    )
    for kind, urls in plan:
        for url in urls:
            apply_replica_change(app, kind, url, record=False)
            log.info("replica %s %s through the admin API before this worker started", url, kind)
    return set(state.removed)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/saga/v1/replicas", add_replica)
    app.router.add_post("/saga/v1/replicas/drain", drain_replica)
    app.router.add_post("/saga/v1/replicas/remove", remove_replica)
    app.router.add_get("/health", health)
    app.router.add_get("/ping", health)  # (vLLM's SageMaker-style health route)
    app.router.add_post("/ping", health)
    workers = app.get(WORKERS)
    carried = None
    if workers is not None and workers.count > 1:
        carried = app[CARRIED_METRICS] = CarriedMetrics(workers.directory, workers.index, workers.count)
        carried.start()
    add_gathered_get(app, "/metrics", metrics_endpoint, functools.partial(merge_metrics, carried=carried))
    add_gathered_get(app, "/saga/v1/state", state, merge_state)
    add_gathered_get(app, "/saga/v1/replicas", replicas, merge_replicas)
