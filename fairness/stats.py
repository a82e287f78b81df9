"""Per-tenant service statistics and Jain's fairness index (pure counters; exported by the proxy's metrics).

Contract: `TenantLedger` is told each call's time to first token and each task's (session's) completion
time; it keeps, per tenant, cumulative histogram buckets (Prometheus style: `counts[k]` observations
<= `buckets[k]`), the count of calls that met the tenant's TTFT target and of those that had one (by the
tenant's own target). Memory is bounded: past `max_records` tenants, those the configuration does not name
share the record `_other`. A full ledger makes room for a new tenant by dropping the record of the one the
configuration does not name that has been idle longest, once it has been idle `idle_s` (by the times the
calls give: a call's first token, a task's last call); so names a client made up once give their places
(and /metrics' series) back, while every tenant active within `idle_s` keeps its own.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Iterable

from fairness.tenants import TenantsConfig

SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


def jain_index(values: Iterable[float]) -> float:
    """(sum x)^2 / (n sum x^2): 1 when all equal, 1/n when one value holds everything; 1.0 for no values."""
    xs = list(values)
    squares = sum(x * x for x in xs)
    return sum(xs) ** 2 / (len(xs) * squares) if xs and squares > 0 else 1.0


# Plain classes, not msgspec Structs: mypyc compiles this module (setup.py); every call's first token and
# every task's end are recorded here.
class Histogram:
    """Cumulative buckets as `counts` (Prometheus style), kept per bucket and summed when read: an observation
    is one increment, not one per bucket above it."""

    __slots__ = ("_per_bucket", "buckets", "count", "total")

    def __init__(self, buckets: tuple[float, ...] = SECONDS_BUCKETS) -> None:
        self.buckets = buckets
        self._per_bucket = [0] * (len(buckets) + 1)  # the last: above every bucket (only in `count`)
        self.total = 0.0
        self.count = 0

    @property
    def counts(self) -> list[int]:
        """`counts[k]`: observations <= `buckets[k]`."""
        return list(itertools.accumulate(self._per_bucket[:-1]))

    def observe(self, value: float) -> None:
        self._per_bucket[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class TenantRecord:
    __slots__ = (
        "cached_prompt_tokens",
        "completion_tokens",
        "last_seen",
        "prompt_tokens",
        "task_completion",
        "ttft",
        "ttft_slo_calls",
        "ttft_slo_met",
    )

    def __init__(self) -> None:
        self.last_seen = 0.0  # the latest time a call or task of the tenant was recorded
        self.ttft = Histogram()
        self.task_completion = Histogram()
        self.ttft_slo_calls = 0  # calls whose tenant has a TTFT target
        self.ttft_slo_met = 0
        # The engines' counts of the calls they served (`usage`), for per-tenant accounting and chargeback:
        # the cached tokens are part of the prompt's (vLLM's `prompt_tokens_details.cached_tokens`).
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cached_prompt_tokens = 0

    @property
    def ttft_slo_attainment(self) -> float | None:
        return self.ttft_slo_met / self.ttft_slo_calls if self.ttft_slo_calls else None


# Tenants are named by clients (a header), and each record is a metrics label value: past this many, a tenant
# the configuration does not name is counted under OTHER, so /metrics and memory stay bounded.
MAX_TENANT_RECORDS = 256
OTHER = "_other"
# How long a tenant's record stays once it records nothing, while the ledger is full and a new tenant waits
# for a place: longer than any scrape interval, so a series ends only for a tenant gone quiet.
TENANT_RECORD_IDLE_S = 900.0


def _last_seen(entry: tuple[float, str]) -> float:
    return entry[0]


class TenantLedger:
    def __init__(
        self,
        config: TenantsConfig,
        max_records: int = MAX_TENANT_RECORDS,
        idle_s: float = TENANT_RECORD_IDLE_S,
    ) -> None:
        self.config = config
        self.max_records = max_records
        self.idle_s = idle_s
        self.records: dict[str, TenantRecord] = {}
        # no record can be dropped before this (the idlest one's last time plus `idle_s`): a full ledger
        # under a stream of new names scans its records once per record it can drop, not once per call
        self._next_drop_at = 0.0
        self.dropped = 0  # records dropped to make room

    def record(self, tenant: str, now: float = 0.0) -> TenantRecord:
        rec = self.records.get(tenant)
        if rec is None:
            if (
                len(self.records) >= self.max_records
                and tenant not in self.config.tenants
                and not self._drop_idlest(now)
            ):
                tenant = OTHER
                rec = self.records.get(OTHER)
            if rec is None:
                rec = self.records[tenant] = TenantRecord()
        if now > rec.last_seen:
            rec.last_seen = now
        return rec

    def _drop_idlest(self, now: float) -> bool:
        """Drops the record idle longest, if it has been idle `idle_s` (never a configured tenant's, nor
        OTHER's): True if one was dropped."""
        if now < self._next_drop_at:
            return False
        tenants = self.config.tenants
        droppable = [
            (rec.last_seen, name)
            for name, rec in self.records.items()
            if name != OTHER and name not in tenants
        ]
        # the two idlest, the first of equals first (`nsmallest` keeps the records' order among equals)
        two = heapq.nsmallest(2, droppable, key=_last_seen)
        if not two:  # every record is a configured tenant's: none can go
            self._next_drop_at = math.inf
            return False
        idlest_at, idlest = two[0]
        if now - idlest_at < self.idle_s:
            self._next_drop_at = idlest_at + self.idle_s
            return False
        del self.records[idlest]
        self.dropped += 1
        next_at = two[1][0] if len(two) > 1 else now  # `now`: the new record's time
        self._next_drop_at = min(next_at, now) + self.idle_s
        return True

    def first_token(self, tenant: str, ttft_s: float, now: float = 0.0) -> None:
        rec = self.records.get(tenant)
        if rec is None:
            rec = self.record(tenant, now)
        elif now > rec.last_seen:
            rec.last_seen = now
        rec.ttft.observe(ttft_s)
        target = self.config.ttft_target_s(tenant)
        if target is not None:
            rec.ttft_slo_calls += 1
            rec.ttft_slo_met += 1 if ttft_s <= target else 0

    def tokens_used(self, tenant: str, prompt: int, completion: int, cached: int, now: float = 0.0) -> None:
        """A served call's usage as its engine counted it."""
        rec = self.records.get(tenant)
        if rec is None:
            rec = self.record(tenant, now)
        elif now > rec.last_seen:
            rec.last_seen = now
        rec.prompt_tokens += prompt
        rec.completion_tokens += completion
        rec.cached_prompt_tokens += cached

    def task_done(self, tenant: str, completion_s: float, now: float = 0.0) -> None:
        self.record(tenant, now).task_completion.observe(completion_s)
