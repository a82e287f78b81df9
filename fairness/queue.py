"""The fair release queue: in which order held calls leave the proxy, across tenants and within one.

Contract (pure: no I/O, no clock of its own; `now` is passed in):
- `push(key, item, tenant=, cost=, remaining=, now=)` holds an item; `pop(now)` releases the next one (None
  when empty); `remove(key)` takes a held item out without charging anyone (a client gone); `serve_now`
  charges an item that an empty queue would release at once, without holding it.
- Orders: `fifo` releases in arrival order and ignores tenants (no fairness). `vtc` and `afs` are weighted
  fair queueing on a virtual counter per tenant: the backlogged tenant with the least counter goes next and
  is charged `cost / weight`. The caller decides what cost means: token counts for `vtc` (the published
  baseline, Sheng et al., OSDI '24), estimated GPU seconds for `afs` (Agent Fair Share).
- Within a tenant: `fifo`/`vtc` in arrival order; `afs` least `remaining` first (the workflow's remaining
  predicted work, so short tasks finish), except that a call held longer than `age_bound_s` goes first
  (oldest first): no call waits behind ever-shorter work for ever.

Guarantee (proved in docs/fairness.md). Let C_i be the largest cost of any call of tenant i and w_i its
weight. For any two tenants i and j continuously backlogged in this queue over an interval, the service
released to them in that interval (summed costs) satisfies

    | W_i / w_i  -  W_j / w_j |  <=  C_i / w_i  +  C_j / w_j .

It rests on one invariant, checked by `check_invariant`: with F the counter of the last tenant picked (the
"system virtual time", non-decreasing), every backlogged tenant's counter lies in [F, F + C_i / w_i]. A
tenant that becomes backlogged starts at max(its counter, F): idle time earns no credit, past service no debt.

Fleet share: lanes built with one `FleetShare` share their counters and F (the largest counter picked in any
of them), so a tenant's counter is its normalised service over the whole fleet, and a lane releases first
the tenant least served fleet-wide among those backlogged in it. A tenant light over the fleet then goes
first where its workflows gathered. The theorem above is per lane and does not hold there (a lane's tenants
may be served in other lanes); what holds is the rule itself: no lane releases a call of a tenant while
another tenant backlogged in that lane has a smaller counter, except that a call held past `age_bound_s` goes
first whatever its tenant (without it, a tenant served in other lanes could wait in this one without bound).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

# Tenants are named by clients (a header), so their state is bounded: once more than this many are known, the
# tenants not backlogged are forgotten (their counter, `served` total and C_i). For one whose counter F has
# reached that is exact (it would restart at F anyway); one ahead of F comes back with at most one call's
# cost of credit (C_i / w_i). The guarantee is about tenants backlogged throughout, which are never forgotten.
MAX_IDLE_TENANTS = 4096
Order = Literal["fifo", "vtc", "afs"]
ORDERS: tuple[Order, ...] = ("fifo", "vtc", "afs")


# Plain classes, not dataclasses: mypyc compiles them to native classes (setup.py), and a generic dataclass
# fails there at import.
class _Held(Generic[T]):
    __slots__ = ("arrived_at", "cost", "gone", "item", "key", "remaining", "seq", "tenant")

    def __init__(
        self, seq: int, key: str, item: T, tenant: str, cost: float, remaining: float, arrived_at: float
    ) -> None:
        self.seq = seq
        self.key = key
        self.item = item
        self.tenant = tenant
        self.cost = cost
        self.remaining = remaining
        self.arrived_at = arrived_at
        self.gone = False


class _TenantBacklog(Generic[T]):
    __slots__ = ("by_age", "by_work", "size")

    def __init__(self) -> None:
        self.by_work: list[tuple[float, int, _Held[T]]] = []  # heap: least remaining
        self.by_age: deque[_Held[T]] = deque()  # arrival order (lazy deletion)
        self.size = 0

    def head_seq(self) -> int:
        while self.by_age and self.by_age[0].gone:
            self.by_age.popleft()
        return self.by_age[0].seq


class FleetShare:
    """The counters and system virtual time every lane of one release queue shares (the fleet share), and
    in how many lanes each tenant is backlogged, so that only tenants backlogged nowhere are forgotten."""

    __slots__ = ("_sweep_at", "backlogged", "counters", "max_idle_tenants", "system_time")

    def __init__(self, max_idle_tenants: int = MAX_IDLE_TENANTS) -> None:
        self.counters: dict[str, float] = {}
        self.system_time = 0.0
        self.backlogged: dict[str, int] = {}  # lanes a tenant is backlogged in
        self.max_idle_tenants = max_idle_tenants
        self._sweep_at = max_idle_tenants

    def joined(self, tenant: str) -> None:
        self.backlogged[tenant] = self.backlogged.get(tenant, 0) + 1
        if len(self.counters) > self._sweep_at:  # forget the tenants backlogged in no lane (as a lane does)
            for idle in [t for t in self.counters if t not in self.backlogged]:
                del self.counters[idle]
            self._sweep_at = max(self.max_idle_tenants, 2 * len(self.counters))

    def left(self, tenant: str) -> None:
        n = self.backlogged.get(tenant, 0) - 1
        if n > 0:
            self.backlogged[tenant] = n
        else:
            self.backlogged.pop(tenant, None)


class FairQueue(Generic[T]):
    """One release lane. `weight_of(tenant)` must be > 0; costs are clamped to >= 0. With `fleet`, the lane
    shares its counters and system virtual time with the other lanes built with it (module contract)."""

    def __init__(
        self,
        order: Order = "afs",
        weight_of: Callable[[str], float] = lambda _: 1.0,
        *,
        age_bound_s: float | None = 30.0,
        max_idle_tenants: int = MAX_IDLE_TENANTS,
        fleet: FleetShare | None = None,
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"unknown queue order {order!r}; known: {', '.join(ORDERS)}")
        self.order = order
        self.weight_of = weight_of
        self.age_bound_s = age_bound_s
        self.fleet = fleet
        # virtual counter V_i per tenant (normalised service): the fleet's when shared
        self.counters: dict[str, float] = fleet.counters if fleet is not None else {}
        self.served: dict[str, float] = {}  # summed cost released per tenant
        self.max_cost: dict[str, float] = {}  # C_i seen so far
        self._system_time = 0.0  # F (the fleet's when shared)
        # Largest spread max V - min V among backlogged tenants seen after any release, and the bound it
        # obeys there (max C_i / w_i over those tenants): what a benchmark reports as observed deviation.
        self.peak_spread = 0.0
        self.peak_spread_bound = 0.0
        self._seq = itertools.count()
        self._held: dict[str, _Held[T]] = {}
        self._tenants: dict[str, _TenantBacklog[T]] = {}
        self._arrivals: deque[_Held[T]] = deque()  # fifo order only
        self.max_idle_tenants = max_idle_tenants
        self._sweep_at = max_idle_tenants  # tenants known past which idle ones are forgotten (amortised)

    @property
    def system_time(self) -> float:
        return self.fleet.system_time if self.fleet is not None else self._system_time

    @system_time.setter
    def system_time(self, value: float) -> None:
        if self.fleet is not None:  # lanes pick in their own order: the fleet's F is the largest picked
            self.fleet.system_time = max(self.fleet.system_time, value)
        else:
            self._system_time = value

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: str) -> bool:
        return key in self._held

    def items(self) -> Iterator[T]:
        return (h.item for h in self._held.values())

    def get(self, key: str) -> T | None:
        held = self._held.get(key)
        return None if held is None else held.item

    def backlog(self) -> dict[str, int]:
        """Held calls per backlogged tenant."""
        return {t: b.size for t, b in self._tenants.items()}

    # -- operations -----------------------------------------------------------------------------------

    def push(self, key: str, item: T, *, tenant: str, cost: float, remaining: float, now: float) -> None:
        if key in self._held:
            raise ValueError(f"{key!r} is already held")
        held = _Held(next(self._seq), key, item, tenant, max(0.0, cost), remaining, now)
        self._held[key] = held
        if self.order == "fifo":
            self._arrivals.append(held)
            return
        backlog = self._tenants.get(tenant)
        if backlog is None:  # becomes backlogged: no credit for idle time, no debt for past service
            backlog = self._tenants[tenant] = _TenantBacklog()
            self.counters[tenant] = max(self.counters.get(tenant, 0.0), self.system_time)
            if self.fleet is not None:
                self.fleet.joined(tenant)
        backlog.size += 1
        backlog.by_age.append(held)
        if self.order == "afs":
            heapq.heappush(backlog.by_work, (remaining, held.seq, held))

    def serve_now(self, tenant: str, cost: float) -> None:
        """Account for an item that `push` then `pop` would release at once, without holding it: the
        tenant's counter, the system virtual time, `served` and `max_cost` end as they would. Only while
        nothing is held (otherwise the item would wait its turn): ValueError."""
        if self._held:
            raise ValueError("serve_now needs an empty queue")
        cost = max(0.0, cost)
        if self.order != "fifo":
            # push: a tenant that becomes backlogged starts at max(its counter, F); pop: F moves to it
            counter = max(self.counters.get(tenant, 0.0), self.system_time)
            self.system_time = counter
            self.counters[tenant] = counter + cost / self.weight_of(tenant)
        self.served[tenant] = self.served.get(tenant, 0.0) + cost
        self.max_cost[tenant] = max(self.max_cost.get(tenant, 0.0), cost)
        if len(self.served) > self._sweep_at:
            self._forget_idle()

    def next_tenant(self) -> str | None:
        """The tenant whose call `pop` releases next (None when empty)."""
        if not self._held:
            return None
        if self.order == "fifo":
            while self._arrivals[0].gone:
                self._arrivals.popleft()
            return self._arrivals[0].tenant
        if len(self._tenants) == 1:  # one tenant backlogged (the common case): it is the minimum
            return next(iter(self._tenants))
        return min(self._tenants, key=lambda t: (self.counters[t], self._tenants[t].head_seq()))

    def _next_tenant_at(self, now: float) -> str | None:
        """`next_tenant`, except that in a fleet share a call held past `age_bound_s` goes first whatever its
        tenant (the oldest such): there a tenant served elsewhere could otherwise wait here without bound."""
        tenant = self.next_tenant()
        if self.fleet is None or self.age_bound_s is None or len(self._tenants) < 2:
            return tenant
        oldest: _Held[T] | None = None
        for backlog in self._tenants.values():
            backlog.head_seq()  # drops released heads
            head = backlog.by_age[0]
            if oldest is None or head.arrived_at < oldest.arrived_at:
                oldest = head
        if oldest is not None and now - oldest.arrived_at > self.age_bound_s:
            return oldest.tenant
        return tenant

    def pop(self, now: float) -> T | None:
        tenant = self._next_tenant_at(now)
        if tenant is None:
            return None
        if self.order == "fifo":
            held = self._arrivals.popleft()
            self._release(held)
            return held.item
        held = self._take(self._tenants[tenant], now)
        self.system_time = self.counters[tenant]
        self.counters[tenant] += held.cost / self.weight_of(tenant)
        self._release(held)
        self._note_spread()
        return held.item

    def peek(self, now: float) -> T | None:
        """The item `pop(now)` would release, left in place (None when empty)."""
        tenant = self._next_tenant_at(now)
        if tenant is None:
            return None
        if self.order == "fifo":
            return self._arrivals[0].item  # next_tenant dropped the removed heads
        backlog = self._tenants[tenant]
        backlog.head_seq()  # drops removed heads
        if self.order == "vtc" or (self.age_bound_s is not None and self._oldest_waited(backlog, now)):
            return backlog.by_age[0].item
        while backlog.by_work[0][2].gone:
            heapq.heappop(backlog.by_work)
        return backlog.by_work[0][2].item

    def remove(self, key: str) -> T | None:
        held = self._held.get(key)
        if held is None:
            return None
        held.gone = True
        del self._held[key]
        backlog = self._tenants.get(held.tenant)
        if backlog is not None:
            backlog.size -= 1
            if backlog.size == 0:
                del self._tenants[held.tenant]
                if self.fleet is not None:
                    self.fleet.left(held.tenant)
        return held.item

    # -- the guarantee --------------------------------------------------------------------------------

    def bound(self, tenant_a: str, tenant_b: str) -> float:
        """The proved bound on |W_a/w_a - W_b/w_b| over an interval both are backlogged in."""
        return sum(self.max_cost.get(t, 0.0) / self.weight_of(t) for t in (tenant_a, tenant_b))

    def lead(self, tenant: str) -> float:
        """How far a backlogged tenant's counter is ahead of the system virtual time, V_i - F (>= 0)."""
        return self.counters.get(tenant, self.system_time) - self.system_time

    def check_invariant(self) -> None:
        """Raise AssertionError unless every backlogged tenant's counter is in [F, F + C_i / w_i]."""
        eps = 1e-9 * max(1.0, abs(self.system_time))
        for tenant in self._tenants:
            lead = self.lead(tenant)
            limit = self.max_cost.get(tenant, 0.0) / self.weight_of(tenant)
            assert -eps <= lead <= limit + eps, (tenant, lead, limit)

    # -- internals ------------------------------------------------------------------------------------

    def _note_spread(self) -> None:
        if len(self._tenants) < 2:
            return
        values = [self.counters[t] for t in self._tenants]
        spread = max(values) - min(values)
        if spread > self.peak_spread:
            self.peak_spread = spread
            self.peak_spread_bound = max(self.max_cost.get(t, 0.0) / self.weight_of(t) for t in self._tenants)

    def _take(self, backlog: _TenantBacklog[T], now: float) -> _Held[T]:
        held: _Held[T] | None = None
        backlog.head_seq()  # drops released heads
        if self.order == "vtc" or (self.age_bound_s is not None and self._oldest_waited(backlog, now)):
            held = backlog.by_age.popleft()
        else:
            while held is None or held.gone:
                held = heapq.heappop(backlog.by_work)[2]
        return held

    def _oldest_waited(self, backlog: _TenantBacklog[T], now: float) -> bool:
        assert self.age_bound_s is not None
        return now - backlog.by_age[0].arrived_at > self.age_bound_s

    def _release(self, held: _Held[T]) -> None:
        self.served[held.tenant] = self.served.get(held.tenant, 0.0) + held.cost
        self.max_cost[held.tenant] = max(self.max_cost.get(held.tenant, 0.0), held.cost)
        self.remove(held.key)
        if len(self.served) > self._sweep_at:
            self._forget_idle()

    def _forget_idle(self) -> None:
        """Forgets the tenants not backlogged (see MAX_IDLE_TENANTS); the next sweep waits until twice as many
        are known, so sweeps cost O(1) per call amortised."""
        keep = self._tenants
        for tenant in [t for t in self.served if t not in keep]:
            del self.served[tenant]
            self.max_cost.pop(tenant, None)
            if self.fleet is None:  # shared counters are the fleet's to forget (FleetShare.joined)
                self.counters.pop(tenant, None)
        self._sweep_at = max(self.max_idle_tenants, 2 * len(self.served))
