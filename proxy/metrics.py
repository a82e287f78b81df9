"""The proxy's own Prometheus metrics (a registry per app, so several proxies can live in one process)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from proxy.scheduler import SchedulerCore


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.responses = Counter(
            "saga_responses", "Answers relayed, by replica and status", ["replica", "status"], registry=r
        )
        self.rejected = Counter("saga_rejected", "Calls refused by the scheduler", registry=r)
        self.upstream_failures = Counter(
            "saga_upstream_failures", "Replica connection failures", ["replica"], registry=r
        )
        self.retries = Counter("saga_retries", "Calls retried on another replica", registry=r)
        self.client_disconnects = Counter(
            "saga_client_disconnects", "Clients gone before their answer ended", registry=r
        )
        self.in_flight = Gauge("saga_replica_in_flight", "Calls in flight", ["replica"], registry=r)
        self.healthy = Gauge("saga_replica_healthy", "1 if the replica is healthy", ["replica"], registry=r)
        self.sessions = Gauge("saga_sessions", "Sessions the scheduler tracks", registry=r)

    def response(self, core: SchedulerCore) -> web.Response:
        for replica in core.replicas.values():
            self.in_flight.labels(replica.replica_id).set(replica.in_flight)
            self.healthy.labels(replica.replica_id).set(1 if replica.healthy else 0)
        self.sessions.set(len(core.sessions))
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
