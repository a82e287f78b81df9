"""The proxy's own Prometheus metrics (a registry per app, so several proxies can live in one process).

All names start with `saga_`. Counters: calls by route and status, calls that failed for their client by cause
(once each: `invalid_request_body`, `invalid_api_key`, `queue_full`, `upstream_error`, `upstream_5xx`,
`upstream_timeout`, `upstream_mid_answer`, `client_disconnect`, ...: docs/observability.md), scheduler
decisions, retries, failed attempts on replicas by replica and cause. Histograms: time to first byte, call
latency, task (session) completion time for sessions ended explicitly. Gauges, refreshed on scrape: queue
depth, calls in flight, live sessions, replica health. The retention releaser's counts (releases sent, failed,
dropped, pending: proxy/retention_release.py) are read from it on scrape.

The request path only bumps plain Python numbers (`Counts`, `Buckets`): no locks, no label lookups in
prometheus_client, about a microsecond a call. A collector turns them into metric families when
`/metrics` is scraped.

With workers (`saga serve --workers N`), `merge_expositions` combines every worker's exposition into one
(proxy/worker_gather.py asks them): counters and histograms summed, each gauge by its rule in `GAUGE_RULES`,
plus `saga_workers` (configured) and `saga_workers_reporting` (the workers whose figures are included).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from proxy.connection_handoff import HandoffCounts
from proxy.kv_residency import KvResidency
from proxy.retention_release import RetentionReleaser
from proxy.scheduler import SchedulerCore
from proxy.shared_learning import LearningRings

_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TASK_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)


class Counts:
    """A labelled counter: `counts.labels(*values).inc()` as with prometheus_client, without its locks."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str] = ()) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, tuple(labelnames)
        # an unlabelled counter shows 0 from the start, as prometheus_client's do (until its first event it
        # had no sample, and a dashboard's rate() of it was "No data": the forty-fourth session's review)
        self.values: dict[tuple[str, ...], float] = {} if self.labelnames else {(): 0.0}

    def labels(self, *values: str) -> _Bump:
        return _Bump(self.values, values)

    def bump(self, *values: str) -> None:
        """`labels(*values).inc()` without the intermediate object (the request path's form)."""
        self.values[values] = self.values.get(values, 0.0) + 1.0

    def inc(self, amount: float = 1.0) -> None:
        self.values[()] = self.values.get((), 0.0) + amount

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, count in self.values.items():
            family.add_metric(list(values), count)
        return family


class _Bump:
    __slots__ = ("_key", "_values")

    def __init__(self, values: dict[tuple[str, ...], float], key: tuple[str, ...]) -> None:
        self._values, self._key = values, key

    def inc(self, amount: float = 1.0) -> None:
        self._values[self._key] = self._values.get(self._key, 0.0) + amount


class Buckets:
    """A histogram: `observe(seconds)`."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = tuple(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def family(self) -> HistogramMetricFamily:
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        family = HistogramMetricFamily(self.name, self.documentation)
        family.add_metric([], cumulative, sum_value=self.sum)
        return family


class ProxyMetrics(Collector):
    def __init__(self) -> None:
        self.calls = Counts("saga_calls", "LLM calls answered, by route and status", ["route", "status"])
        self.errors = Counts(
            "saga_errors", "Calls that failed for their client, once each, by cause", ("cause",)
        )
        self.decisions = Counts("saga_decisions", "Scheduler decisions, by kind", ["kind"])
        self.responses = Counts(
            "saga_responses", "Answers relayed, by replica and status", ["replica", "status"]
        )
        self.rejected = Counts("saga_rejected", "Calls refused by the scheduler")
        self.upstream_failures = Counts(
            "saga_upstream_failures",
            "Failed attempts on a replica (retried or not), by replica and cause",
            ["replica", "cause"],
        )
        self.retries = Counts("saga_retries", "Calls retried on another replica")
        self.client_disconnects = Counts("saga_client_disconnects", "Clients gone before their answer ended")
        self.response_lookups = Counts(
            "saga_response_lookups",
            "Responses API ids this proxy had no record of, looked up on the replicas, by result",
            ["result"],
        )
        self.ttft = Buckets(
            "saga_time_to_first_byte_seconds", "Arrival to the answer's first byte", _CALL_BUCKETS
        )
        self.latency = Buckets("saga_call_latency_seconds", "Arrival to the answer's end", _CALL_BUCKETS)
        self.task_completion = Buckets(
            "saga_task_completion_seconds", "First call to end of sessions ended explicitly", _TASK_BUCKETS
        )
        self._core: SchedulerCore | None = None
        self.releaser: RetentionReleaser | None = None  # set at startup, with the upstream session
        self.handoffs: HandoffCounts | None = None  # set in a worker of several (proxy/server.py)
        self.learning: LearningRings | None = None  # likewise (proxy/load_sync.py)
        self.kv_residency: KvResidency | None = None  # with `kv_events` (proxy/kv_residency.py)
        # whether a replica passes its health checks now (proxy/admin.py `passes_checks`; the app sets it)
        self.passes_checks: Callable[[str], bool] | None = None
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def count_learning(self, rings: LearningRings) -> None:
        self.learning = rings

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        for counter in (
            self.calls,
            self.errors,
            self.decisions,
            self.responses,
            self.rejected,
            self.upstream_failures,
            self.retries,
            self.client_disconnects,
            self.response_lookups,
        ):
            yield counter.family()
        for histogram in (self.ttft, self.latency, self.task_completion):
            yield histogram.family()
        yield from self._releases()
        yield from self._kv_events()
        if self.handoffs is not None:
            moved = CounterMetricFamily(
                "saga_handoffs",
                "Between workers: connections sent to and received from a session's owner, calls relayed to "
                "it, calls served here because it could not be reached",
                labels=["kind"],
            )
            for kind in ("sent", "received", "relayed", "failed"):
                moved.add_metric([kind], getattr(self.handoffs, kind))
            yield moved
        if self.learning is not None:
            learned = CounterMetricFamily(
                "saga_learned_observations",
                "Between workers: what this worker's predictor learned and published, what it replayed from "
                "the others, and what it could not publish (a batch over half its ring)",
                labels=["kind"],
            )
            for kind in ("published", "replayed", "dropped"):
                learned.add_metric([kind], getattr(self.learning, kind))
            yield learned
            yield CounterMetricFamily(
                "saga_learning_lost_bytes",
                "Between workers: the others' learned observations overwritten before this worker read them",
                self.learning.lost_bytes,
            )
        core = self._core
        if core is None:
            return
        snapshot = core.snapshot()
        admission = core.admission
        waiting = 0 if admission is None else len(admission.waiting)
        yield GaugeMetricFamily(
            "saga_queue_depth",
            "Calls waiting in the proxy: first calls waiting for admission, calls held in the release queue",
            snapshot.get("queued", 0) + waiting,
        )
        if admission is not None:
            yield GaugeMetricFamily(
                "saga_admission_waiting",
                "New workflows' first calls waiting for admission (KV room)",
                waiting,
            )
            reserved = GaugeMetricFamily(
                "saga_admission_reserved_tokens",
                "KV tokens the admitted workflows reserve on the replica (predicted footprints)",
                labels=["replica"],
            )
            for replica_id in core.replicas:
                reserved.add_metric([replica_id], admission.own_reserved(replica_id))
            yield reserved
            yield CounterMetricFamily("saga_admitted", "New workflows admitted", admission.admitted)
            yield CounterMetricFamily(
                "saga_admitted_past_max_wait",
                "New workflows admitted where no replica had room, after waiting admission.max_wait_s",
                admission.admitted_overdue,
            )
        yield GaugeMetricFamily("saga_in_flight", "Calls dispatched and not finished", len(core.in_flight))
        yield GaugeMetricFamily("saga_sessions", "Live sessions the scheduler tracks", len(core.sessions))
        in_flight = GaugeMetricFamily("saga_replica_in_flight", "Calls in flight", labels=["replica"])
        healthy = GaugeMetricFamily(
            "saga_replica_healthy", "1 if the replica passes SAGA's health checks", labels=["replica"]
        )
        draining = GaugeMetricFamily(
            "saga_replica_draining",
            "1 while an operator drains the replica (it takes no new work)",
            labels=["replica"],
        )
        slowness = GaugeMetricFamily(
            "saga_replica_slowness",
            "Times slower than the fastest replica, calls for calls alike (1: not measured slower; "
            "stealing.slower_above)",
            labels=["replica"],
        )
        drained, checked = core.draining, self.passes_checks
        for replica in core.replicas.values():
            replica_id = replica.replica_id
            # This worker's own calls: workers' /metrics are summed (proxy/worker_gather.py).
            in_flight.add_metric([replica_id], replica.in_flight - replica.foreign_in_flight)
            up = checked(replica_id) if checked is not None else replica.healthy
            healthy.add_metric([replica_id], 1 if up else 0)
            draining.add_metric([replica_id], 1 if replica_id in drained else 0)
            slowness.add_metric([replica_id], replica.slowness)
        yield in_flight
        yield healthy
        yield draining
        yield slowness

    def _kv_events(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        kv = self.kv_residency
        if kv is None:
            return
        batches = CounterMetricFamily(
            "saga_kv_events_batches", "KV-event batches received from the replica", labels=["replica"]
        )
        gaps = CounterMetricFamily(
            "saga_kv_events_gaps",
            "Times the replica's KV events skipped or restarted their numbering (its view started afresh)",
            labels=["replica"],
        )
        blocks = GaugeMetricFamily(
            "saga_kv_events_cached_blocks", "Blocks the replica's KV events say it caches", labels=["replica"]
        )
        for replica, ranks in kv.replicas.items():  # its data-parallel ranks' views summed
            views = ranks.values()
            batches.add_metric([replica], sum(view.batches for view in views))
            gaps.add_metric([replica], sum(view.gaps for view in views))
            blocks.add_metric([replica], sum(len(view.owner) for view in views))
        yield batches
        yield gaps
        yield blocks

    def _releases(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        releaser = self.releaser
        if releaser is None:
            return
        yield CounterMetricFamily(
            "saga_retention_releases_sent",
            "Early retention releases sent to replicas (POST /saga/v1/release)",
            releaser.sent,
        )
        yield CounterMetricFamily(
            "saga_retention_releases_failed",
            "Releases sent that did not release (no retention contract, replica down, timeout)",
            releaser.failed,
        )
        yield CounterMetricFamily(
            "saga_retention_releases_dropped", "Releases not sent: too many pending", releaser.dropped
        )
        yield GaugeMetricFamily(
            "saga_retention_releases_pending", "Releases sent and not answered yet", len(releaser.pending)
        )

    def response(self, core: SchedulerCore) -> web.Response:
        self._core = core
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


# How each gauge combines across workers. Summed: what each worker counts of its own (calls queued or in
# flight, sessions: a session lives in its owner only). One value, for what every worker knows alike: a
# replica's health is the worst any worker sees (a replica one worker cannot reach is reported down); a
# tenant's fair-share lead the largest (the bound holds per worker). A ratio is recomputed from the summed
# counters it is made of (`_RATIOS`). A gauge not named here is summed (tests/proxy/test_worker_gather.py
# checks that every gauge the proxy exports is named).
GAUGE_RULES: dict[str, Callable[[list[float]], float]] = {
    "saga_queue_depth": sum,
    "saga_admission_waiting": sum,
    "saga_admission_reserved_tokens": sum,
    "saga_in_flight": sum,
    "saga_sessions": sum,
    "saga_replica_in_flight": sum,
    "saga_retention_releases_pending": sum,
    "saga_tenant_queued_calls": sum,
    "saga_replica_healthy": min,
    "saga_replica_draining": max,
    "saga_replica_slowness": max,  # each worker measures its own calls
    "saga_kv_events_cached_blocks": max,  # every worker subscribes to every replica
    "saga_tenant_share_lead_seconds": max,
    "saga_tenant_share_bound_seconds": max,
    "saga_tenant_ttft_slo_attainment": min,  # replaced by met / calls where both counters are there
}
_RATIOS = {"saga_tenant_ttft_slo_attainment": ("saga_tenant_ttft_slo_met", "saga_tenant_ttft_slo_calls")}
_SUMMED_TYPES = frozenset({"counter", "histogram", "summary"})


class _Family:
    """One metric family across workers: its HELP and TYPE lines, and each sample's values in first-seen
    order, keyed by the sample's text before its value (name and labels, which every worker writes alike:
    the same code, labels sorted by prometheus_client)."""

    def __init__(self, name: str, kind: str, head: list[str]) -> None:
        self.name, self.kind, self.head = name, kind, head
        self.values: dict[str, list[float]] = {}

    def combined(self, values: list[float]) -> float:
        if self.kind in _SUMMED_TYPES:
            return sum(values)
        if self.kind != "gauge":
            return values[0]
        if self.name.endswith("_created"):  # a counter's creation time, exposed as a gauge
            return min(values)
        rule = GAUGE_RULES.get(self.name)
        return sum(values) if rule is None else rule(values)


def merge_expositions(texts: Sequence[str], workers: int, *, reporting: int | None = None) -> bytes:
    """One exposition for the proxy from each reporting worker's (`workers`: how many are configured;
    `reporting`: how many of `texts` are workers' answers, all by default, the rest carried figures:
    proxy/metrics_carry.py).

    Read line by line rather than with prometheus_client's parser: the texts are this proxy's own
    (generate_latest's format), and the parser alone costs ~20x more of the event loop (15 ms against 0.8 for
    4 workers with 64 replicas: `python -m loadtests.bench.metrics_merge`, docs/config.md Routes)."""
    families: dict[str, _Family] = {}
    for text in texts:
        family: _Family | None = None
        head: list[str] = []
        for line in text.split("\n"):  # not splitlines: a label value may hold U+2028
            if line.startswith("#"):
                head.append(line)
                parts = line.split(" ", 3)
                if len(parts) >= 4 and parts[1] == "TYPE":
                    family = families.get(parts[2])
                    if family is None:
                        family = families[parts[2]] = _Family(parts[2], parts[3], head)
                    head = []
            elif line and family is not None:
                key, _, value = line.rpartition(" ")
                family.values.setdefault(key, []).append(float(value))
    totals: dict[str, float] = {}
    for family in families.values():
        for key, values in family.values.items():
            totals[key] = family.combined(values)
    for name, (numerator, denominator) in _RATIOS.items():
        if name in families:
            for key in families[name].values:
                labels = key[len(name) :]
                part, whole = (
                    totals.get(f"{numerator}_total{labels}"),
                    totals.get(f"{denominator}_total{labels}"),
                )
                if part is not None and whole:
                    totals[key] = part / whole
    lines = []
    for family in families.values():
        lines.extend(family.head)
        lines.extend(f"{key} {_number(totals[key])}" for key in family.values)
    for name, doc, count in (
        ("saga_workers", "Worker processes configured", workers),
        (
            "saga_workers_reporting",
            "Workers whose figures this answer includes",
            len(texts) if reporting is None else reporting,
        ),
    ):
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} gauge", f"{name} {_number(count)}"]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _number(value: float) -> str:
    """As the text format writes a value (prometheus_client's floatToGoString, for what this proxy sends)."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
