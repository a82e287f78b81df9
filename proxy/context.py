"""What the proxy's handlers share: the app keys and the gate that hands the core's decisions to handlers."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from proxy.cache_key_conversations import CacheKeyConversations
from proxy.config import ProxyConfig
from proxy.kv_residency import KvResidency
from proxy.metrics import ProxyMetrics
from proxy.model_routing import ReplicaModels
from proxy.priority_fallback import PriorityRefusals
from proxy.replica_changes import ReplicaChanges
from proxy.replica_guard import GuardParams, ReplicaGuard
from proxy.response_owners import ChainOwners, QuoteOwners, ResponseOwners
from proxy.retention_release import RetentionReleaser
from proxy.scheduler import Decision, ReplicaStats, SchedulerCore
from proxy.session_chain import PrefixChains
from proxy.upstream_pool import UpstreamPool
from proxy.worker_set import WorkerSet


class DecisionGate:
    """Hands the core's decisions to the handlers waiting for them.

    A decision may answer a call that arrived earlier (an admission queue dispatches waiting calls from
    `request_finished` or `tick`); handlers wait here until theirs comes.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Decision]] = {}
        self.stopping = False  # the proxy's drain time is over: it ends the calls left (proxy/server.py)

    def expect(self, request_id: str) -> asyncio.Future[Decision]:
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    def apply(self, decisions: list[Decision]) -> None:
        for decision in decisions:
            future = self._waiting.pop(decision.request_id, None)
            if future is not None and not future.done():
                future.set_result(decision)


class Guards:
    """One `ReplicaGuard` per replica id, made on first use."""

    def __init__(self, params: GuardParams, priority_reprobe_s: float = 300.0) -> None:
        self.params = params
        self._guards: dict[str, ReplicaGuard] = {}
        self.no_priority = PriorityRefusals(priority_reprobe_s)  # replicas that refused a request priority

    def __getitem__(self, replica_id: str) -> ReplicaGuard:
        guard = self._guards.get(replica_id)
        if guard is None:
            guard = self._guards[replica_id] = ReplicaGuard(self.params)
        return guard

    def forget(self, replica_id: str) -> None:
        self._guards.pop(replica_id, None)
        self.no_priority.forget(replica_id)


def down_stats(replica_id: str) -> ReplicaStats:
    """A replica that is down: its last load figures no longer describe anything. Its KV capacity, the
    hardware's, is kept (a replica back up with it unknown would be room for every waiting workflow); a page
    read without one says it publishes none."""
    return ReplicaStats(replica_id, healthy=False, waiting=0, running=0, kv_usage=0.0)


CONFIG = web.AppKey("config", ProxyConfig)
CORE = web.AppKey("core", SchedulerCore)
GATE = web.AppKey("gate", DecisionGate)
GUARDS = web.AppKey("guards", Guards)
METRICS = web.AppKey("metrics", ProxyMetrics)
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
CHAINS = web.AppKey("chains", PrefixChains)  # session inference by prefix chaining
# the conversations under one `prompt_cache_key`, told apart
KEY_CONVERSATIONS = web.AppKey("key_conversations", CacheKeyConversations)
POOL = web.AppKey("pool", UpstreamPool)  # the data path's connections to replicas
RELEASER = web.AppKey("releaser", RetentionReleaser)  # retentions the policy gives up before their TTL
MODELS = web.AppKey("models", ReplicaModels)  # replica id -> the models it serves
WORKERS: web.AppKey[WorkerSet | None] = web.AppKey("workers")  # None: single-process (proxy/worker_set.py)
# which worker served a Responses API answer (proxy/response_owners.py); None with one process
RESPONSE_OWNERS: web.AppKey[ResponseOwners | None] = web.AppKey("response_owners")
# which worker served a chat answer, by its prefix-chain key (proxy/response_owners.py); None with one process
CHAIN_OWNERS: web.AppKey[ChainOwners | None] = web.AppKey("chain_owners")
# which worker filed the lines a compacting agent's summary is found by (proxy/response_owners.py); or None
QUOTE_OWNERS: web.AppKey[QuoteOwners | None] = web.AppKey("quote_owners")
# With workers: the admin API's replica set changes, kept for a worker restarted later (None: one process).
REPLICA_CHANGES: web.AppKey[ReplicaChanges | None] = web.AppKey("replica_changes")
# What each replica caches of each session, from its KV events (proxy/kv_residency.py); None: not subscribed.
KV_RESIDENCY: web.AppKey[KvResidency | None] = web.AppKey("kv_residency")
TENANT_SOURCES = web.AppKey("tenant_sources", tuple[str, ...])  # the tenants' identity headers, lowercased
