"""The release queue: calls held in the proxy and released in a fair order when their replica has room.

Contract:
- Off unless configured (`ReleaseQueueSpec`), so existing policies dispatch every call at once as before.
- On arrival the routing policy picks the call's replica as usual (its home: affinity, prefix, load); the call
  is held in that replica's lane. A lane releases while the `Gate` plugin says its replica has room, in the
  lane's `FairQueue` order (fifo, vtc or afs; fairness/queue.py), so the guarantee of docs/fairness.md holds
  per replica: among tenants backlogged on the same replica. With `share: fleet` the lanes share one
  `FleetShare`: a lane releases first the tenant least served over the whole fleet among those it holds.
- Charges: `afs` in estimated GPU seconds (`GpuCostModel` over `SessionHistory`'s guess of the uncached
  prompt and the output), `vtc` in tokens (`TokenCostModel`), `fifo` none. Within a tenant, `afs` orders by
  `RemainingWork` (a predictor's, or `CallsSoFarEstimate`) with the age bound `age_bound_s`.
- Bounded: `hold` refuses (returns False) once `max_queued` calls are held; the core answers 429. With
  workers, the bound is shared (proxy/scheduler/shared_bound.py).
"""

from __future__ import annotations

import math
import random

import msgspec

from fairness import (
    CallsSoFarEstimate,
    FairQueue,
    FleetShare,
    GpuCostModel,
    RemainingWork,
    SessionHistory,
    TenantsConfig,
    TokenCostModel,
)
from fairness.queue import ORDERS, Order
from proxy.scheduler.framework import Gate
from proxy.scheduler.plugin_spec import ConfigError, PluginSpec, build_plugin
from proxy.scheduler.shared_bound import SharedCount, reached
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo, Usage

SHARES = ("replica", "fleet")
# A cost parameter's bound: a call's charge (parameter x tokens, / the tenant's weight) must stay finite, or
# the lane's virtual time becomes infinite for good and the fair order arrival order.
MAX_COST = 1e6


class ReleaseQueueSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    order: str = "afs"  # fifo | vtc | afs
    # Where a tenant's share is counted: "replica" (each lane on its own: the proved bound of
    # docs/fairness.md) or "fleet" (one count over every lane, so a tenant whose workflows gathered on one
    # replica is not held to that replica's share there while it is light over the fleet).
    share: str = "replica"
    gate: PluginSpec = msgspec.field(default_factory=lambda: PluginSpec("max-in-flight-gate"))
    max_queued: int = 10_000
    age_bound_s: float | None = 30.0  # within a tenant, a call held this long goes before shorter work
    gpu_cost: GpuCostModel = GpuCostModel()
    token_cost: TokenCostModel = TokenCostModel()
    expected_calls: int = 30  # the default remaining-work estimate's task length
    default_output_tokens: int = 200
    # Extra calls in flight per replica for a tenant whose SLO class has a target, when the fair order
    # reaches its call: it starts at once instead of waiting for a slot (the order itself is unchanged).
    slo_headroom: int = 0
    # Hold calls only while at least this many tenants have sent a call within `active_window_s` (or calls are
    # held already): with 2, a proxy serving one tenant at a time pays nothing for fairness (the gate and the
    # order matter only when tenants compete). 1: always.
    min_active_tenants: int = 1
    active_window_s: float = 300.0

    def validate(self) -> None:
        if self.order not in ORDERS:
            raise ConfigError(f"queue.order {self.order!r} is unknown; known: {', '.join(ORDERS)}")
        if self.share not in SHARES:
            raise ConfigError(f"queue.share {self.share!r} is unknown; known: {', '.join(SHARES)}")
        if self.max_queued < 1:
            raise ConfigError(f"queue.max_queued must be >= 1, got {self.max_queued}")
        if self.slo_headroom < 0:
            raise ConfigError(f"queue.slo_headroom must be >= 0, got {self.slo_headroom}")
        if self.min_active_tenants < 1:
            raise ConfigError(f"queue.min_active_tenants must be >= 1, got {self.min_active_tenants}")
        if not 0 < self.active_window_s < math.inf:
            raise ConfigError(f"queue.active_window_s must be > 0 and finite, got {self.active_window_s}")
        if self.age_bound_s is not None and not 0 < self.age_bound_s < math.inf:
            raise ConfigError(
                f"queue.age_bound_s must be > 0 and finite (null: none), got {self.age_bound_s}"
            )
        # (an estimate of 0 calls or tokens charged every call nothing: the fair order was arrival order)
        if not 1 <= self.expected_calls <= 1_000_000:
            raise ConfigError(
                f"queue.expected_calls must be between 1 and 1000000, got {self.expected_calls}"
            )
        if not 1 <= self.default_output_tokens <= 10_000_000:
            raise ConfigError(
                "queue.default_output_tokens must be between 1 and 10000000, "
                f"got {self.default_output_tokens}"
            )
        for model in ("gpu_cost", "token_cost"):
            for field in msgspec.structs.fields(getattr(self, model)):
                value = getattr(getattr(self, model), field.name)
                if not 0 <= value <= MAX_COST:  # NaN and inf too: either ends the fair order (see MAX_COST)
                    raise ConfigError(
                        f"queue.{model}.{field.name} must be between 0 and {MAX_COST:g}, got {value}"
                    )


class HeldCall(msgspec.Struct):
    req: RequestInfo
    tried: set[ReplicaId]
    replica_id: ReplicaId


class ReleaseQueue:
    """Per-replica lanes of held calls; see the module contract."""

    def __init__(
        self,
        spec: ReleaseQueueSpec,
        tenants: TenantsConfig,
        *,
        seed: int | None = None,
        remaining_work: RemainingWork | None = None,
    ) -> None:
        spec.validate()
        try:
            tenants.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.spec = spec
        self.order: Order = spec.order  # type: ignore[assignment]  # validated above
        self.tenants = tenants
        self.gate = build_plugin(spec.gate, Gate, random.Random(seed))
        self.remaining_work: RemainingWork = remaining_work or CallsSoFarEstimate(spec.expected_calls)
        self.history = SessionHistory(spec.default_output_tokens)
        self.fleet = FleetShare() if spec.share == "fleet" else None
        self.lanes: dict[ReplicaId, FairQueue[HeldCall]] = {}
        self._lane_of: dict[str, ReplicaId] = {}
        self._held_per_session: dict[str, int] = {}  # a session with a held call is not idle
        self._held_per_tenant: dict[str, int] = {}  # who fills the bound (`push_out_for`)
        # `saga serve --workers N`: the calls every worker holds (max_queued is shared: shared_bound.py)
        self.shared: SharedCount | None = None

    def __len__(self) -> int:
        return len(self._lane_of)

    def is_full(self) -> bool:
        """`max_queued` calls are held (with workers, `shared`: shared_bound.py)."""
        return reached(len(self._lane_of), self.shared, self.spec.max_queued)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._lane_of

    def has_room(self, replica: ReplicaView) -> bool:
        """Whether `replica` takes the next call of its lane (the gate, with headroom for SLO tenants)."""
        if not replica.healthy:
            return False
        if self.gate.has_room(replica):
            return True
        lane = self.lanes.get(replica.replica_id)
        tenant = lane.next_tenant() if lane is not None and self.spec.slo_headroom else None
        if tenant is None or not self._has_slo(tenant):
            return False
        relieved = msgspec.structs.replace(replica, in_flight=replica.in_flight - self.spec.slo_headroom)
        return self.gate.has_room(relieved)

    def _has_slo(self, tenant: str) -> bool:
        slo = self.tenants.slo(tenant)
        return slo.tct_factor is not None or slo.ttft_s is not None

    def hold(
        self, req: RequestInfo, replica_id: ReplicaId, tried: set[ReplicaId], now: float, bounded: bool = True
    ) -> bool:
        """Hold `req` for `replica_id`; False when the queue is full (`bounded`: False for a call the caller
        made room for, `push_out_for`, or one accepted already, a retry)."""
        if bounded and self.is_full():
            return False
        lane = self.lanes.get(replica_id)
        if lane is None:
            lane = self.lanes[replica_id] = FairQueue(
                self.order, self.tenants.weight, age_bound_s=self.spec.age_bound_s, fleet=self.fleet
            )
        estimate = self.history.estimate(req.session_id, req.prompt_tokens, req.tenant_id)
        cost = (self.spec.token_cost if self.order == "vtc" else self.spec.gpu_cost).call_cost_s(estimate)
        gpu_s = cost if self.order != "vtc" else self.spec.gpu_cost.call_cost_s(estimate)
        remaining = self.remaining_work(req.agent_type, self.history.calls(req.session_id), gpu_s)
        held = HeldCall(req, tried, replica_id)
        lane.push(req.request_id, held, tenant=req.tenant_id, cost=cost, remaining=remaining, now=now)
        self._lane_of[req.request_id] = replica_id
        if self.shared is not None:
            self.shared.publish(len(self._lane_of))
        self._held_per_session[req.session_id] = self._held_per_session.get(req.session_id, 0) + 1
        tenant = req.tenant_id
        self._held_per_tenant[tenant] = self._held_per_tenant.get(tenant, 0) + 1
        return True

    def push_out_for(self, tenant: str) -> HeldCall | None:
        """The queue is full and a call of `tenant` arrives: the newest held call of the tenant holding the
        most, taken out for the caller to refuse, when that tenant holds more than `tenant` plus one (None:
        `tenant` holds its share already). So a tenant retrying at once after each 429 cannot keep every
        place."""
        counts = self._held_per_tenant
        most = max(counts, key=counts.__getitem__, default=None)
        if most is None or most == tenant or counts[most] <= counts.get(tenant, 0) + 1:
            return None
        for request_id in reversed(self._lane_of):
            lane = self.lanes[self._lane_of[request_id]]
            held = lane.get(request_id)
            if held is not None and held.req.tenant_id == most:
                return self.cancel(request_id)
        return None

    def holds_session(self, session_id: str) -> bool:
        return session_id in self._held_per_session

    def _unheld(self, held: HeldCall) -> None:
        if self.shared is not None:
            self.shared.publish(len(self._lane_of))
        sid = held.req.session_id
        left = self._held_per_session.pop(sid, 1) - 1
        if left:
            self._held_per_session[sid] = left
        tenant = held.req.tenant_id
        left = self._held_per_tenant.pop(tenant, 1) - 1
        if left:
            self._held_per_tenant[tenant] = left

    def next_for(self, replica_id: ReplicaId, now: float) -> HeldCall | None:
        lane = self.lanes.get(replica_id)
        held = lane.pop(now) if lane is not None else None
        if held is not None:
            del self._lane_of[held.req.request_id]
            self._unheld(held)
        return held

    def cancel(self, request_id: str) -> HeldCall | None:
        replica_id = self._lane_of.pop(request_id, None)
        held = self.lanes[replica_id].remove(request_id) if replica_id is not None else None
        if held is not None:
            self._unheld(held)
        return held

    def drain(self, replica_id: ReplicaId) -> list[HeldCall]:
        """Take every call held for `replica_id` (it went down or away), oldest first."""
        lane = self.lanes.pop(replica_id, None)
        if lane is None:
            return []
        held = sorted(lane.items(), key=lambda h: h.req.arrived_at)
        for h in held:
            del self._lane_of[h.req.request_id]
            self._unheld(h)
            lane.remove(h.req.request_id)  # (so a fleet share counts the tenant out of this lane)
        return held

    def queued_on(self, replica_id: ReplicaId) -> int:
        lane = self.lanes.get(replica_id)
        return len(lane) if lane is not None else 0

    def queued_by_tenant(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for lane in self.lanes.values():
            for tenant, n in lane.backlog().items():
                totals[tenant] = totals.get(tenant, 0) + n
        return totals

    def share_lead(self) -> dict[str, float]:
        """Per tenant, the largest V_i - F over the lanes it is backlogged in (the bound: C_i / w_i)."""
        leads: dict[str, float] = {}
        for lane in self.lanes.values():
            for tenant in lane.backlog():
                leads[tenant] = max(leads.get(tenant, 0.0), lane.lead(tenant))
        return leads

    def share_bound(self) -> dict[str, float]:
        """Per tenant, C_i / w_i: the most its counter may lead the system virtual time in any lane."""
        bounds: dict[str, float] = {}
        for lane in self.lanes.values():
            for tenant, cost in lane.max_cost.items():
                bounds[tenant] = max(bounds.get(tenant, 0.0), cost / self.tenants.weight(tenant))
        return bounds

    def finished(self, req: RequestInfo, usage: Usage) -> None:
        prompt = usage.prompt_tokens or req.prompt_tokens
        self.history.finished(req.session_id, prompt, usage.completion_tokens, req.tenant_id)

    def forget(self, session_id: str) -> None:
        self.history.forget(session_id)
