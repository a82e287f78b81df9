"""Per-tenant Prometheus metrics, read from the scheduler core at scrape time (no work on the request path).

Exported (label `tenant`): `saga_tenant_queued_calls` (held in the release queue); the histograms
`saga_tenant_ttft_seconds` and `saga_tenant_task_completion_seconds` (a task ends when its session goes idle
and is forgotten);
`saga_tenant_ttft_slo_attainment` (share of calls meeting the tenant's TTFT target, tenants with one), its
counters `saga_tenant_ttft_slo_calls_total` and `saga_tenant_ttft_slo_met_total` (for windowed rates and
burn-rate alerts); the tokens of its served calls as their engines counted them (`usage`):
`saga_tenant_prompt_tokens_total`, `saga_tenant_completion_tokens_total` and
`saga_tenant_cached_prompt_tokens_total` (part of the prompt's), for chargeback and capacity planning; and
`saga_tenant_share_lead_seconds` with `saga_tenant_share_bound_seconds`: how far the tenant's fair-queue
counter runs ahead of the system virtual time (the deviation docs/fairness.md bounds) and that bound.

Bounded: tenants are named by clients, so the queue's three gauges use the ledger's labels. A tenant with a
record of its own (or named in the configuration) keeps its label, and new ones take the room the ledger has
left (`MAX_TENANT_RECORDS`; a full ledger drops the record of a tenant idle 15 minutes for a new one:
fairness/stats.py); the rest are folded into `_other` (queued calls summed, lead and bound their
largest, so lead <= bound still holds there).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from fairness.stats import OTHER, Histogram, TenantLedger
from proxy.scheduler import SchedulerCore


def _histogram(name: str, doc: str, per_tenant: dict[str, Histogram]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=["tenant"])
    for tenant, h in per_tenant.items():
        buckets = [(repr(b), float(c)) for b, c in zip(h.buckets, h.counts, strict=True)]
        buckets.append(("+Inf", float(h.count)))
        family.add_metric([tenant], buckets, h.total)
    return family


class _Labels:
    """One scrape's label per tenant: its own while the ledger has (or has room for) its record, else
    OTHER."""

    def __init__(self, ledger: TenantLedger) -> None:
        self.ledger = ledger
        self.room = ledger.max_records - len(ledger.records)
        self.new: set[str] = set()

    def __call__(self, tenant: str) -> str:
        ledger = self.ledger
        if tenant in ledger.records or tenant in ledger.config.tenants or tenant in self.new:
            return tenant
        if len(self.new) < self.room:
            self.new.add(tenant)
            return tenant
        return OTHER


def _folded(values: dict[str, float], label: _Labels, *, total: bool) -> dict[str, float]:
    """`values` per label: summed (`total`) or the largest where several tenants share one."""
    out: dict[str, float] = {}
    for tenant, value in values.items():
        name = label(tenant)
        seen = out.get(name)
        out[name] = value if seen is None else (seen + value if total else max(seen, value))
    return out


# The engines' token counts of the calls they served, per tenant (name, help, TenantRecord field).
_TOKEN_COUNTERS = (
    ("saga_tenant_prompt_tokens", "Prompt tokens of the tenant's served calls", "prompt_tokens"),
    ("saga_tenant_completion_tokens", "Tokens generated for the tenant's calls", "completion_tokens"),
    (
        "saga_tenant_cached_prompt_tokens",
        "Prompt tokens found in the prefix cache (part of the prompt tokens)",
        "cached_prompt_tokens",
    ),
)


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
            label_of = _Labels(core.tenant_stats)
            held: dict[str, float] = dict(core.release.queued_by_tenant())
            for tenant, value in _folded(held, label_of, total=True).items():
                queued.add_metric([tenant], value)
            for tenant, value in _folded(core.release.share_lead(), label_of, total=False).items():
                lead.add_metric([tenant], value)
            for tenant, value in _folded(core.release.share_bound(), label_of, total=False).items():
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
        for name, doc, field in _TOKEN_COUNTERS:
            tokens = CounterMetricFamily(name, doc, labels=label)
            for tenant, rec in records.items():
                tokens.add_metric([tenant], getattr(rec, field))
            yield tokens
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
