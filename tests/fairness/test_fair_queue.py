"""The fair queue on its own: orders, the proved deviation bound and freedom from starvation (hypothesis)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fairness import FairQueue, jain_index

TENANTS = ("a", "b", "c", "d")


def drain(queue: FairQueue[str], now: float = 0.0) -> list[str]:
    out = []
    while (item := queue.pop(now)) is not None:
        out.append(item)
    return out


def test_fifo_releases_in_arrival_order_whatever_the_tenant() -> None:
    q: FairQueue[str] = FairQueue("fifo")
    for i, tenant in enumerate("aababb"):
        q.push(f"k{i}", f"{tenant}{i}", tenant=tenant, cost=1.0, remaining=10 - i, now=0)
    assert drain(q) == ["a0", "a1", "b2", "a3", "b4", "b5"]


def test_vtc_alternates_equal_tenants_and_follows_weights() -> None:
    q: FairQueue[str] = FairQueue("vtc", {"a": 1.0, "b": 2.0}.__getitem__)
    for i in range(6):
        q.push(f"a{i}", f"a{i}", tenant="a", cost=1.0, remaining=0, now=0)
        q.push(f"b{i}", f"b{i}", tenant="b", cost=1.0, remaining=0, now=0)
    order = drain(q)[:9]
    # b has twice a's weight: two b calls for each a call while both are backlogged.
    assert [x[0] for x in order] == list("abbabbabb")
    assert [x for x in order if x[0] == "a"] == ["a0", "a1", "a2"]  # FIFO within a tenant


def test_afs_charges_cost_not_calls() -> None:
    q: FairQueue[str] = FairQueue("afs", age_bound_s=None)
    for i in range(4):
        q.push(f"big{i}", "big", tenant="big", cost=4.0, remaining=1, now=0)
    for i in range(8):
        q.push(f"small{i}", "small", tenant="small", cost=1.0, remaining=1, now=0)
    first_eight = drain(q)[:8]
    # Equal weights, equal cost: one big call (4 s) per four small ones (1 s each).
    assert first_eight.count("big") == 2 and first_eight.count("small") == 6


def test_afs_least_remaining_work_first_with_an_age_bound() -> None:
    q: FairQueue[str] = FairQueue("afs", age_bound_s=10.0)
    q.push("old", "old-long", tenant="t", cost=1, remaining=100, now=0.0)
    q.push("new", "new-short", tenant="t", cost=1, remaining=1, now=5.0)
    q.push("mid", "mid", tenant="t", cost=1, remaining=50, now=6.0)
    assert q.pop(now=8.0) == "new-short"  # nobody waited past the bound: least remaining first
    assert q.pop(now=20.0) == "old-long"  # waited 20 s > 10 s: goes before shorter work
    assert q.pop(now=20.0) == "mid"


def test_remove_withdraws_without_charge_and_idle_tenants_earn_no_credit() -> None:
    q: FairQueue[str] = FairQueue("afs", age_bound_s=None)
    q.push("x", "x", tenant="a", cost=5, remaining=0, now=0)
    assert q.remove("x") == "x" and len(q) == 0 and q.pop(0) is None
    assert q.counters["a"] == 0.0
    for i in range(10):  # b is served alone for a while
        q.push(f"b{i}", "b", tenant="b", cost=1, remaining=0, now=0)
    drain(q)
    for i in range(3):
        q.push(f"a{i}", "a", tenant="a", cost=1, remaining=0, now=0)
        q.push(f"b{i + 10}", "b", tenant="b", cost=1, remaining=0, now=0)
    # a joins at the system virtual time: no burst of ten calls owed to it for having been idle.
    assert drain(q) == ["a", "b", "a", "b", "a", "b"]


def test_bad_order_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown queue order"):
        FairQueue("lifo")  # type: ignore[arg-type]


def test_jain_index() -> None:
    assert jain_index([2.0, 2.0, 2.0]) == pytest.approx(1.0)
    assert jain_index([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)
    assert jain_index([]) == 1.0


# -- the guarantee, over random arrival sequences, costs and weights -----------------------------------------

op = st.one_of(
    st.tuples(st.just("push"), st.sampled_from(TENANTS), st.floats(0.01, 10.0)),
    st.tuples(st.just("pop"), st.just(""), st.just(0.0)),
    st.tuples(st.just("remove"), st.sampled_from(TENANTS), st.just(0.0)),
)
weights_st = st.fixed_dictionaries({t: st.floats(0.1, 10.0) for t in TENANTS})


def run_ops(
    order: str, weights: dict[str, float], ops: list[tuple[str, str, float]]
) -> tuple[FairQueue[str], list[dict[str, float]], list[set[str]], list[str]]:
    """Apply `ops`; after each, record normalised service per tenant and who is backlogged."""
    q: FairQueue[str] = FairQueue(order, weights.__getitem__, age_bound_s=None)  # type: ignore[arg-type]
    keys = itertools.count()
    held: dict[str, list[str]] = {t: [] for t in TENANTS}
    service: list[dict[str, float]] = []
    backlogged: list[set[str]] = []
    popped: list[str] = []
    for kind, tenant, cost in ops:
        if kind == "push":
            key = f"{tenant}-{next(keys)}"
            q.push(key, key, tenant=tenant, cost=cost, remaining=cost, now=0.0)
            held[tenant].append(key)
        elif kind == "pop":
            key = q.pop(0.0)
            if key is not None:
                held[key.split("-")[0]].remove(key)
                popped.append(key.split("-")[0])
        elif held[tenant]:
            q.remove(held[tenant].pop())
        q.check_invariant()
        service.append({t: q.served.get(t, 0.0) / weights[t] for t in TENANTS})
        backlogged.append({t for t in TENANTS if held[t]})
    return q, service, backlogged, popped


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["vtc", "afs"]), weights_st, st.lists(op, max_size=80))
def test_weighted_service_of_two_backlogged_tenants_stays_within_the_bound(
    order: str, weights: dict[str, float], ops: list[tuple[str, str, float]]
) -> None:
    q, service, backlogged, _ = run_ops(order, weights, ops)
    n = len(service)
    for i, j in itertools.combinations(TENANTS, 2):
        bound = q.bound(i, j) + 1e-9
        for start in range(n):
            for end in range(start, n):
                if not {i, j} <= backlogged[end]:
                    break
                gap = (service[end][i] - service[start][i]) - (service[end][j] - service[start][j])
                assert abs(gap) <= bound, (i, j, start, end, gap, bound)


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(["vtc", "afs"]),
    weights_st,
    st.lists(st.tuples(st.sampled_from(TENANTS), st.floats(0.5, 5.0)), min_size=4, max_size=60),
)
def test_no_backlogged_tenant_starves(
    order: str, weights: dict[str, float], arrivals: list[tuple[str, float]]
) -> None:
    """Every tenant holds calls throughout; between two releases to a tenant, the others get at most
    sum_i (C_j w_i / (w_j c_min) + 1) releases (docs/fairness.md, corollary)."""
    q: FairQueue[str] = FairQueue(order, weights.__getitem__, age_bound_s=None)  # type: ignore[arg-type]
    keys = itertools.count()
    c_min, c_max = 0.5, 5.0
    for tenant in TENANTS:  # everyone backlogged from the start, with enough work to stay so
        for _ in range(len(arrivals) + 2):
            q.push(f"{tenant}-{next(keys)}", tenant, tenant=tenant, cost=c_max, remaining=0, now=0)
    for tenant, cost in arrivals:
        q.push(f"{tenant}-{next(keys)}", tenant, tenant=tenant, cost=cost, remaining=0, now=0)
    since = dict.fromkeys(TENANTS, 0)
    for _ in range(len(arrivals) + 2):
        served = q.pop(0.0)
        assert served is not None
        for tenant in TENANTS:
            since[tenant] = 0 if tenant == served else since[tenant] + 1
            limit = sum(c_max * weights[i] / (weights[tenant] * c_min) + 1 for i in TENANTS if i != tenant)
            assert since[tenant] <= limit


@settings(max_examples=60, deadline=None)
@given(
    order=st.sampled_from(["fifo", "vtc", "afs"]),
    ops=st.lists(
        st.tuples(st.sampled_from(["push", "pop", "remove"]), st.sampled_from(TENANTS), st.integers(1, 5)),
        max_size=40,
    ),
)
def test_peek_names_what_pop_releases_and_changes_nothing(
    order: str, ops: list[tuple[str, str, int]]
) -> None:
    q: FairQueue[str] = FairQueue(order, age_bound_s=5.0)  # type: ignore[arg-type]
    keys = itertools.count()
    live: list[str] = []
    for now, (op, tenant, size) in enumerate(ops):
        if op == "push":
            key = f"{tenant}{next(keys)}"
            q.push(key, key, tenant=tenant, cost=float(size), remaining=float(size), now=float(now))
            live.append(key)
        elif op == "remove" and live:
            q.remove(live.pop(size % len(live)))
        else:
            peeked, peeked_again = q.peek(float(now)), q.peek(float(now))
            assert peeked == peeked_again == q.pop(float(now))
            if peeked is not None:
                live.remove(peeked)
    assert q.peek(1e9) == q.pop(1e9)


@settings(max_examples=60, deadline=None)
@given(
    order=st.sampled_from(["vtc", "afs"]),
    ops=st.lists(
        st.tuples(st.integers(0, 39), st.floats(0.0, 5.0), st.integers(0, 3), st.booleans()),
        min_size=1,
        max_size=300,
    ),
)
def test_a_queue_that_forgets_idle_tenants_stays_bounded_and_fair(
    order: str, ops: list[tuple[int, float, int, bool]]
) -> None:
    """Forty tenants named by clients and a queue that may remember four idle ones: the invariant holds after
    every step, every held call comes out once, and what the queue knows stays bounded."""
    q: FairQueue[str] = FairQueue(order, age_bound_s=None, max_idle_tenants=4)  # type: ignore[arg-type]
    pushed, released = set(), []
    for i, (tenant_no, cost, pops, at_once) in enumerate(ops):
        tenant = f"t{tenant_no}"
        if at_once and not len(q):
            q.serve_now(tenant, cost)
        else:
            q.push(f"k{i}", f"k{i}", tenant=tenant, cost=cost, remaining=cost, now=0.0)
            pushed.add(f"k{i}")
        for _ in range(pops):
            item = q.pop(0.0)
            if item is not None:
                released.append(item)
        q.check_invariant()
        backlogged = len(q.backlog())
        assert len(q.served) <= max(4, 2 * backlogged) + backlogged + 1
    released += drain(q)
    assert sorted(released) == sorted(pushed)


def test_a_flood_of_one_off_tenants_is_forgotten_and_known_tenants_order_as_before() -> None:
    """10,000 tenant ids seen once each (a client putting a request id in X-Tenant-Id) leave a bounded state;
    two tenants backlogged throughout are served as they are without the flood."""

    def run(flood: bool) -> tuple[list[str], int]:
        q: FairQueue[str] = FairQueue("vtc", max_idle_tenants=64)
        order = []
        for i in range(10_000):
            if flood:
                q.serve_now(f"once-{i}", 1.0)
        for i in range(20):
            q.push(f"a{i}", "a", tenant="a", cost=1.0, remaining=0, now=0)
            q.push(f"b{i}", "b", tenant="b", cost=2.0, remaining=0, now=0)
        while (item := q.pop(0.0)) is not None:
            order.append(item)
            q.check_invariant()
        return order, len(q.served)

    flooded, known = run(True)
    assert flooded == run(False)[0]
    assert known <= 130
