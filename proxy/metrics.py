"""The proxy's own Prometheus metrics (a registry per app, so several proxies can live in one process).

All names start with `saga_`. Counters: calls by route and status, errors by cause (`bad_request`,
`unauthorized`, `rejected`, `upstream_unreachable`, `upstream_5xx`, `upstream_timeout`, `upstream_mid_answer`,
`client_disconnect`, ...), scheduler decisions, retries, replica failures. Histograms: time to first byte,
call latency, task (session) completion time for sessions ended explicitly. Gauges, refreshed on scrape:
queue depth, calls in flight, live sessions, sessions known to the prefix-chain index, replica health.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from proxy.scheduler import SchedulerCore

_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TASK_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calls = Counter(
            "saga_calls", "LLM calls answered, by route and status", ["route", "status"], registry=r
        )
        self.errors = Counter("saga_errors", "Calls that failed, by cause", ["cause"], registry=r)
        self.decisions = Counter("saga_decisions", "Scheduler decisions, by kind", ["kind"], registry=r)
        self.responses = Counter(
            "saga_responses", "Answers relayed, by replica and status", ["replica", "status"], registry=r
        )
        self.rejected = Counter("saga_rejected", "Calls refused by the scheduler", registry=r)
        self.upstream_failures = Counter(
            "saga_upstream_failures",
            "Replica failures (connect, 5xx, timeout, mid-answer)",
            ["replica"],
            registry=r,
        )
        self.retries = Counter("saga_retries", "Calls retried on another replica", registry=r)
        self.client_disconnects = Counter(
            "saga_client_disconnects", "Clients gone before their answer ended", registry=r
        )
        self.ttft = Histogram(
            "saga_time_to_first_byte_seconds",
            "Arrival to the answer's first byte",
            buckets=_CALL_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "saga_call_latency_seconds", "Arrival to the answer's end", buckets=_CALL_BUCKETS, registry=r
        )
        self.task_completion = Histogram(
            "saga_task_completion_seconds",
            "First call to end of sessions ended explicitly",
            buckets=_TASK_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge("saga_queue_depth", "Calls held in the proxy's queue", registry=r)
        self.in_flight_total = Gauge("saga_in_flight", "Calls dispatched and not finished", registry=r)
        self.in_flight = Gauge("saga_replica_in_flight", "Calls in flight", ["replica"], registry=r)
        self.healthy = Gauge("saga_replica_healthy", "1 if the replica is healthy", ["replica"], registry=r)
        self.sessions = Gauge("saga_sessions", "Live sessions the scheduler tracks", registry=r)

    def response(self, core: SchedulerCore) -> web.Response:
        for replica in core.replicas.values():
            self.in_flight.labels(replica.replica_id).set(replica.in_flight)
            self.healthy.labels(replica.replica_id).set(1 if replica.healthy else 0)
        self.sessions.set(len(core.sessions))
        self.in_flight_total.set(len(core.in_flight))
        self.queue_depth.set(core.snapshot().get("queued", 0))
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )
