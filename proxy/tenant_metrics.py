"""Per-tenant Prometheus metrics, read from the scheduler core at scrape time (no work on the request path).

Exported (label `tenant`): `saga_tenant_queued_calls` (held in the release queue); the histograms
`saga_tenant_ttft_seconds` and `saga_tenant_task_completion_seconds` (a task ends when its session goes idle
and is forgotten);
`saga_tenant_ttft_slo_attainment` (share of calls meeting the tenant's TTFT target, tenants with one), its
counters `saga_tenant_ttft_slo_calls_total` and `saga_tenant_ttft_slo_met_total` (for windowed rates and
burn-rate alerts), and
`saga_tenant_share_lead_seconds` with `saga_tenant_share_bound_seconds`: how far the tenant's fair-queue
counter runs ahead of the system virtual time (the deviation docs/fairness.md bounds) and that bound.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from fairness.stats import Histogram
from proxy.scheduler import SchedulerCore


def _histogram(name: str, doc: str, per_tenant: dict[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["tenant"])
    for tenant, h in per_tenant.items():
        buckets = [(repr(b), float(c)) for b, c in zip(h.buckets, h.counts, strict=True)]
        buckets.append(("+Inf", float(h.count)))
        family.add_metric([tenant], buckets, h.total)
    return family


class TenantCollector(Collector):
    def __init__(self, core: SchedulerCore) -> None:
        self.core = core

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        core, records = self.core, self.core.tenant_stats.records
        label = ["tenant"]
        queued = GaugeMetricFamily("saga_tenant_queued_calls", "Calls held in the queue", labels=label)
        lead = GaugeMetricFamily(
            "saga_tenant_share_lead_seconds", "Fair-queue counter ahead of system virtual time", labels=label
        )
        bound = GaugeMetricFamily(
            "saga_tenant_share_bound_seconds", "Proved bound on that lead (C_i / w_i)", labels=["tenant"]
        )
        if core.release is not None:
            for tenant, n in core.release.queued_by_tenant().items():
                queued.add_metric([tenant], n)
            for tenant, value in core.release.share_lead().items():
                lead.add_metric([tenant], value)
            for tenant, value in core.release.share_bound().items():
                bound.add_metric([tenant], value)
        attainment = GaugeMetricFamily(
            "saga_tenant_ttft_slo_attainment", "Share of calls meeting the TTFT target", labels=["tenant"]
        )
        calls = CounterMetricFamily(
            "saga_tenant_ttft_slo_calls", "Calls of tenants with a TTFT target", labels=["tenant"]
        )
        met = CounterMetricFamily(
            "saga_tenant_ttft_slo_met", "Calls that met their TTFT target", labels=["tenant"]
        )
        for tenant, rec in records.items():
            if rec.ttft_slo_attainment is not None:
                attainment.add_metric([tenant], rec.ttft_slo_attainment)
                calls.add_metric([tenant], rec.ttft_slo_calls)
                met.add_metric([tenant], rec.ttft_slo_met)
        yield calls
        yield met
        yield queued
        yield lead
        yield bound
        yield attainment
        ttft = {t: r.ttft for t, r in records.items()}
        yield _histogram("saga_tenant_ttft_seconds", "Time to first token", ttft)
        yield _histogram(
            "saga_tenant_task_completion_seconds",
            "Task (session) completion time",
            {t: r.task_completion for t, r in records.items()},
        )
