"""The per-tenant ledger behind `saga_tenant_*` metrics stays bounded whatever tenant ids clients send."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_a_full_ledger_gives_the_place_of_the_tenant_idle_longest_once_it_is_idle_long_enough() -> None:
    config = msgspec.convert({"tenants": {"chat": {}}}, TenantsConfig)
    ledger = TenantLedger(config, max_records=3, idle_s=100.0)
    ledger.first_token("chat", 0.1, now=0.0)  # configured: never dropped, however idle
    ledger.first_token("made-up-1", 0.1, now=1.0)
    ledger.first_token("made-up-2", 0.1, now=2.0)
    ledger.first_token("late", 0.1, now=50.0)  # full, and no record idle 100 s yet: folded
    assert sorted(ledger.records) == sorted(["chat", "made-up-1", "made-up-2", OTHER])
    ledger.first_token("made-up-2", 0.1, now=90.0)  # active again: keeps its place
    ledger.task_done("late", 5.0, now=101.0)  # made-up-1 idle 100 s: its place is the new tenant's
    assert sorted(ledger.records) == sorted(["chat", "made-up-2", "late", OTHER])
    assert ledger.records["late"].task_completion.count == 1 and ledger.dropped == 1
    ledger.first_token("later", 0.1, now=150.0)  # made-up-2 idle 60 s only
    assert "later" not in ledger.records and ledger.records[OTHER].ttft.count == 2
    ledger.first_token("later", 0.1, now=190.0)
    assert "later" in ledger.records and "made-up-2" not in ledger.records and ledger.dropped == 2
    assert ledger.records["chat"].ttft.count == 1


def test_only_configured_tenants_left_means_nothing_is_dropped() -> None:
    config = msgspec.convert({"tenants": {"a": {}, "b": {}}}, TenantsConfig)
    ledger = TenantLedger(config, max_records=2, idle_s=1.0)
    ledger.first_token("a", 0.1, now=0.0)
    ledger.first_token("b", 0.1, now=0.0)
    for t in range(5):
        ledger.first_token(f"x{t}", 0.1, now=10.0 + t)
    assert sorted(ledger.records) == sorted(["a", "b", OTHER]) and ledger.dropped == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["c", "t0", "t1", "t2", "t3", "t4", "t5"]), st.floats(0, 30)),
        max_size=60,
    )
)
def test_drops_match_a_plain_model_of_the_rule(steps: list[tuple[str, float]]) -> None:
    """Whatever the order of tenants and times, the ledger holds what a model without the scan's shortcut
    holds: a new tenant past the bound takes the place of the unconfigured record idle longest, once idle
    `idle_s`."""
    config = msgspec.convert({"tenants": {"c": {}}}, TenantsConfig)
    ledger = TenantLedger(config, max_records=3, idle_s=10.0)
    model: dict[str, float] = {}
    now = 0.0
    for tenant, gap in steps:
        now += gap
        ledger.first_token(tenant, 0.1, now=now)
        if tenant not in model and len(model) >= 3 and tenant != "c":
            idle = [(name, seen) for name, seen in model.items() if name not in ("c", OTHER)]
            idlest = min(idle, key=lambda item: item[1]) if idle else None  # the first of equals
            if idlest is not None and now - idlest[1] >= 10.0:
                del model[idlest[0]]
            else:
                tenant = OTHER
        model[tenant] = max(model.get(tenant, 0.0), now)
    assert set(ledger.records) == set(model)
    assert all(ledger.records[t].last_seen == model[t] for t in model if t != OTHER)
