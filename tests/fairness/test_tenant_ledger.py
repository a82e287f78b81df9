"""The per-tenant ledger behind `saga_tenant_*` metrics stays bounded whatever tenant ids clients send."""

from __future__ import annotations

import msgspec

from fairness import TenantsConfig
from fairness.stats import MAX_TENANT_RECORDS, OTHER, TenantLedger


def test_tenants_past_the_bound_share_one_record_and_named_ones_keep_theirs() -> None:
    config = msgspec.convert({"tenants": {"chat": {"slo_class": "interactive"}}}, TenantsConfig)
    ledger = TenantLedger(config, max_records=3)
    for tenant in ("t1", "t2", "t3", "t4", "t5", "chat", "t1"):
        ledger.first_token(tenant, 0.5)
    ledger.task_done("t6", 10.0)
    assert sorted(ledger.records) == sorted(["t1", "t2", "t3", OTHER, "chat"])
    assert ledger.records["t1"].ttft.count == 2
    other = ledger.records[OTHER]
    assert (other.ttft.count, other.task_completion.count) == (2, 1)
    assert ledger.records["chat"].ttft_slo_calls == 1 and other.ttft_slo_calls == 0  # each by its own target


def test_a_flood_of_tenant_ids_leaves_a_bounded_ledger() -> None:
    ledger = TenantLedger(TenantsConfig())
    for i in range(5 * MAX_TENANT_RECORDS):
        ledger.first_token(f"request-{i}", 0.1)
    assert len(ledger.records) == MAX_TENANT_RECORDS + 1
    assert ledger.records[OTHER].ttft.count == 4 * MAX_TENANT_RECORDS
