"""Fair queues sharing one count over the fleet (`FleetShare`, `queue.share: fleet`): a lane releases first
the tenant least served over every lane, memory stays bounded, and the release queue keeps the count right."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairness import FairQueue, FleetShare, TenantsConfig, TenantSpec
from proxy.scheduler import ConfigError, RequestInfo
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.release import ReleaseQueue, ReleaseQueueSpec


def lanes(n: int, fleet: FleetShare | None) -> list[FairQueue[str]]:
    return [FairQueue("afs", age_bound_s=None, fleet=fleet) for _ in range(n)]


def push(lane: FairQueue[str], key: str, tenant: str, cost: float = 1.0) -> None:
    lane.push(key, key, tenant=tenant, cost=cost, remaining=cost, now=0.0)


@pytest.mark.parametrize("shared", [False, True])
def test_a_tenant_light_over_the_fleet_goes_first_where_it_gathered(shared: bool) -> None:
    """The flood queues in both lanes, the light tenant in lane 1 only, and the lanes release in turn.
    Counted per replica, lane 1 alternates the two; counted over the fleet, the flood is served in lane 0
    as well, so lane 1 releases the light tenant's calls first."""
    other, gathered = lanes(2, FleetShare() if shared else None)
    for i in range(4):
        push(other, f"flood-a{i}", "flood")
        push(gathered, f"flood-{i}", "flood")
        push(gathered, f"light-{i}", "light")
    order = []
    for _ in range(4):
        assert (other.pop(0.0) or "").startswith("flood")
        order.append((gathered.pop(0.0) or "").split("-")[0])
    assert order == (["light"] * 4 if shared else ["flood", "light", "flood", "light"])


def test_a_call_held_past_the_age_bound_goes_first_whatever_its_tenant() -> None:
    """In a fleet share a tenant served elsewhere could wait without bound where another keeps the lane busy;
    once its call has waited `age_bound_s` it is released next."""
    fleet = FleetShare()
    other, gathered = (FairQueue[str]("afs", age_bound_s=30.0, fleet=fleet) for _ in range(2))
    for i in range(20):  # the flood's counter runs far ahead, served in the other lane
        other.push(f"a{i}", f"a{i}", tenant="flood", cost=1.0, remaining=1.0, now=0.0)
        other.pop(0.0)
    gathered.push("flood-late", "flood-late", tenant="flood", cost=1.0, remaining=1.0, now=0.0)
    for i in range(5):
        gathered.push(f"light-{i}", f"light-{i}", tenant="light", cost=1.0, remaining=1.0, now=0.0)
    assert gathered.peek(10.0) == gathered.pop(10.0) == "light-0"  # behind over the fleet: first
    assert gathered.peek(31.0) == "flood-late"
    assert gathered.pop(31.0) == "flood-late"  # waited past the bound
    assert gathered.pop(31.0) == "light-1"
    assert fleet.counters["flood"] - fleet.system_time <= 1.0


ops = st.lists(
    st.tuples(
        st.sampled_from(["push", "pop", "remove"]),
        st.integers(0, 2),  # lane
        st.sampled_from(["a", "b", "c"]),
        st.floats(0.1, 5.0),
    ),
    max_size=120,
)


@settings(max_examples=120, deadline=None)
@given(ops, st.fixed_dictionaries({t: st.floats(0.1, 10.0) for t in "abc"}))
def test_every_lane_releases_the_least_served_tenant_over_the_fleet(
    steps: list[tuple[str, int, str, float]], weights: dict[str, float]
) -> None:
    fleet = FleetShare()
    queues = [FairQueue("afs", weights.__getitem__, age_bound_s=None, fleet=fleet) for _ in range(3)]
    keys = itertools.count()
    held: dict[tuple[int, str], list[str]] = {}
    largest: dict[str, float] = {}
    for kind, i, tenant, cost in steps:
        lane = queues[i]
        if kind == "push":
            key = f"{tenant}-{next(keys)}"
            push(lane, key, tenant, cost)
            held.setdefault((i, tenant), []).append(key)
            largest[tenant] = max(largest.get(tenant, 0.0), cost)
        elif kind == "pop":
            backlogged = {t for (j, t), keys_ in held.items() if j == i and keys_}
            counters = {t: fleet.counters[t] for t in backlogged}
            key = lane.pop(0.0)
            if key is None:
                assert not backlogged
                continue
            tenant = key.split("-")[0]
            assert counters[tenant] == min(counters.values())  # the rule
            held[(i, tenant)].remove(key)
        elif held.get((i, tenant)):
            lane.remove(held[(i, tenant)].pop())
        for t, n in fleet.backlogged.items():  # the count of lanes each tenant is backlogged in is exact
            assert n == sum(1 for (j, u), keys_ in held.items() if u == t and keys_)
        assert set(fleet.backlogged) == {t for (_, t), keys_ in held.items() if keys_}
        for t in fleet.backlogged:  # no tenant runs ahead of the fleet's F by more than one call
            assert fleet.counters[t] - fleet.system_time <= largest[t] / weights[t] + 1e-9


def test_the_fleet_forgets_only_tenants_backlogged_in_no_lane() -> None:
    fleet = FleetShare(max_idle_tenants=4)
    waiting, busy = lanes(2, fleet)
    push(waiting, "patient-0", "patient")  # stays backlogged in lane 0 throughout
    for i in range(50):  # one-off tenants come and go in lane 1
        push(busy, f"t{i}", f"one-off-{i}")
        busy.pop(0.0)
    assert len(fleet.counters) <= 2 * 4 + 2
    assert "patient" in fleet.counters and fleet.backlogged == {"patient": 1}
    assert waiting.pop(0.0) == "patient-0"


TENANTS = TenantsConfig(tenants={"flood": TenantSpec(1.0, "batch"), "light": TenantSpec(1.0, "interactive")})


def call(n: int, tenant: str) -> RequestInfo:
    return RequestInfo(f"q{n}", f"s{n}", 0.0, tenant_id=tenant, prompt_tokens=1000)


def test_a_drained_lane_counts_its_tenants_out_of_the_fleet() -> None:
    gate = PluginSpec("max-in-flight-gate", params={"max_in_flight": 1})
    queue = ReleaseQueue(ReleaseQueueSpec(gate=gate, share="fleet"), TENANTS)
    assert queue.fleet is not None
    for n, (replica, tenant) in enumerate([("r0", "flood"), ("r0", "light"), ("r1", "flood")]):
        assert queue.hold(call(n, tenant), replica, set(), 0.0)
    assert queue.fleet.backlogged == {"flood": 2, "light": 1}
    assert [h.req.tenant_id for h in queue.drain("r0")] == ["flood", "light"]
    assert queue.fleet.backlogged == {"flood": 1}


def test_an_unknown_share_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"queue\.share 'cluster' is unknown; known: replica, fleet"):
        ReleaseQueue(ReleaseQueueSpec(share="cluster"), TENANTS)
