"""The `saga` policy in the core: admission by KV working set, priorities, work stealing (hand-set clock)."""

from __future__ import annotations

import itertools
import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictor import Predictor
from proxy.metrics import ProxyMetrics
from proxy.scheduler import (
    ConfigError,
    Decision,
    Dispatch,
    PolicySpec,
    Reject,
    ReplicaStats,
    RequestInfo,
    SchedulerCore,
    Usage,
    build_policy,
)
from proxy.scheduler.admission import MIN_HOLD_OUTCOMES, AdmissionSpec, WorkflowAdmission
from proxy.scheduler.prefill_rate import PrefillRate
from proxy.scheduler.registry import PRESETS, PluginSpec
from proxy.scheduler.stealing import StealingSpec, recompute_s, steal_target
from proxy.scheduler.types import ReplicaView
from tests.clocks import Clock

_ids = itertools.count()
CAPACITY = 100_000


def saga_spec(**changes: object) -> PolicySpec:
    return msgspec.structs.replace(PRESETS["saga"], **changes)


def make_core(
    replicas: int = 2, capacity: int | None = CAPACITY, spec: PolicySpec | None = None, **core_kw: object
) -> tuple[SchedulerCore, Clock]:
    clock = Clock()
    ids = [f"r{i}" for i in range(replicas)]
    core = SchedulerCore(ids, build_policy(spec or saga_spec(), seed=0), clock, **core_kw)  # type: ignore[arg-type]
    if capacity is not None:
        for r in ids:
            core.replica_stats(ReplicaStats(r, kv_capacity_tokens=capacity))
    return core, clock


def call(session: str, prompt_tokens: int = 10_000, tenant: str = "default") -> RequestInfo:
    return RequestInfo(
        request_id=f"q{next(_ids)}",
        session_id=session,
        arrived_at=0.0,
        prompt_tokens=prompt_tokens,
        tenant_id=tenant,
        agent_type="coder",
    )


def only_dispatch(decisions: list[Decision]) -> Dispatch:
    (d,) = decisions
    assert isinstance(d, Dispatch), d
    return d


def seen_back(core: SchedulerCore, **fields: object) -> None:
    """A call of `call`'s agent type comes back into its hold once (admission holds a workflow's reservation
    between calls only for a type seen back), in a session that then ends: nothing stays reserved, no growth
    learned. `fields`: the warm-up calls' other fields (a model)."""
    for prompt in (100, 110):  # (a longer prompt: it goes on, rather than repeating its call)
        req = msgspec.structs.replace(call("warm-up", prompt_tokens=prompt), **fields)
        only_dispatch(core.request_arrived(req))
        core.request_finished(req.request_id, Usage(100, 0, finish_reason="tool_calls"))
    core.session_ended("warm-up")
    core.take_releases()  # (its retention's release)
    assert core.admission is not None and not core.admission.reserved.get("r0")


def test_a_new_workflow_waits_until_a_replica_has_room_for_its_footprint_then_binds_there() -> None:
    core, clock = make_core(replicas=1)
    seen_back(core)
    assert core.admission is not None
    footprint = core.admission.footprint_of_new(call("x", prompt_tokens=30_000))
    assert footprint > 30_000  # the prompt plus predicted growth
    fits = int(CAPACITY * core.admission.spec.overcommit) // footprint
    first = [call(f"s{i}", prompt_tokens=30_000) for i in range(fits)]
    for req in first:
        only_dispatch(core.request_arrived(req))
    late = call("late", prompt_tokens=30_000)
    assert core.request_arrived(late) == []  # no room: it waits in the proxy
    assert core.admission.is_waiting("late")
    # A workflow that ends frees its reservation, and the waiting one is admitted by that event.
    clock.now = 5.0
    assert core.request_finished(first[0].request_id, Usage(30_000, 200, finish_reason="stop")) == []
    released = core.session_ended(first[0].session_id)
    assert [d.request_id for d in released] == [late.request_id]
    assert not core.admission.is_waiting("late") and core.admission.is_admitted("late")


def test_calls_of_admitted_workflows_never_wait_behind_new_ones() -> None:
    core, clock = make_core(replicas=1)
    seen_back(core)
    assert core.admission is not None
    footprint = core.admission.footprint_of_new(call("x", prompt_tokens=30_000))
    fits = int(CAPACITY * core.admission.spec.overcommit) // footprint
    live = [call(f"s{i}", prompt_tokens=30_000) for i in range(fits)]
    for req in live:
        only_dispatch(core.request_arrived(req))
    assert core.request_arrived(call("new", prompt_tokens=30_000)) == []  # waits
    for req in live:  # each finishes and calls again (a tool call in between): straight through
        clock.now += 1.0
        core.request_finished(req.request_id, Usage(30_000, 200, finish_reason="tool_calls"))
        only_dispatch(core.request_arrived(call(req.session_id, prompt_tokens=31_000)))
    assert core.admission.is_waiting("new")


@pytest.mark.parametrize("mode", ["first-call", "workflow-age", "off"])
def test_priorities_put_workflows_in_flight_before_new_work(mode: str) -> None:
    core, clock = make_core(replicas=1, spec=saga_spec(prioritize=mode))
    old_first = only_dispatch(core.request_arrived(old := call("old", prompt_tokens=1_000)))
    young_first = only_dispatch(core.request_arrived(call("young", prompt_tokens=1_000)))
    clock.now = 1.0
    core.request_finished(old.request_id, Usage(1_000, 10, finish_reason="tool_calls"))
    old_again = only_dispatch(core.request_arrived(call("old", prompt_tokens=1_100)))
    if mode == "off":
        assert old_first.priority is old_again.priority is young_first.priority is None
        return
    assert old_again.priority is not None and young_first.priority is not None
    assert old_again.priority < young_first.priority  # vLLM: lower first; preempts the highest first
    if mode == "workflow-age":
        assert old_first.priority == old_again.priority  # a workflow keeps its rank over its calls


def test_without_a_known_kv_capacity_admission_falls_back_to_affinity_alone() -> None:
    core, _ = make_core(replicas=1, capacity=None)
    for i in range(50):  # far beyond any footprint: nothing waits
        only_dispatch(core.request_arrived(call(f"s{i}", prompt_tokens=100_000)))


def test_a_workflow_larger_than_a_replica_still_runs_alone() -> None:
    core, _ = make_core(replicas=1)
    only_dispatch(core.request_arrived(call("huge", prompt_tokens=10 * CAPACITY)))
    assert core.request_arrived(call("next", prompt_tokens=1_000)) == []


def served_once(session: str, finish_reason: str) -> tuple[SchedulerCore, Clock]:
    """One replica whose KV holds a single 60k-token workflow (holds of at most 30 s), and `session`'s first
    call served there, finished at t = 1 s with `finish_reason`."""
    spec = saga_spec(admission=AdmissionSpec(max_hold_s=30.0, overcommit=1.0))
    core, clock = make_core(replicas=1, spec=spec)
    seen_back(core)
    first = call(session, prompt_tokens=60_000)
    only_dispatch(core.request_arrived(first))
    clock.now = 1.0
    core.request_finished(first.request_id, Usage(60_000, 100, finish_reason=finish_reason))
    return core, clock


def test_a_workflow_whose_only_call_no_engine_took_holds_nothing_after_it() -> None:
    """A prompt past the model's context (the replica's 400) reserved its footprint like any new workflow;
    held as a live workflow's afterwards, it kept every new workflow on that replica waiting for the whole
    hold (found over HTTP: a 1 MB prompt, then each next call waited ~80-120 s for `max_hold_s`)."""
    core, clock = make_core(replicas=1)
    assert core.admission is not None
    refused = call("too-long", prompt_tokens=10 * CAPACITY)
    only_dispatch(core.request_arrived(refused))
    waiting = call("next", prompt_tokens=1_000)
    assert core.request_arrived(waiting) == []  # it waits while the large one is in flight
    clock.now = 1.0
    released = core.request_finished(refused.request_id, None)  # refused: no usage came back
    assert [d.request_id for d in released] == [waiting.request_id]
    assert core.admission.reserved["r0"] == core.admission.workflows["next"].reserved
    # the refused workflow stays bound: its retry goes straight through, reserving again
    retry = only_dispatch(core.request_arrived(call("too-long", prompt_tokens=2_000)))
    assert retry.replica_id == "r0"


def test_a_call_no_engine_took_neither_sizes_nor_keeps_its_workflows_hold() -> None:
    """A call of a served workflow that comes back without usage (refused: a prompt past the model's
    context, or a replica that came back with less KV; failed; cancelled) grew nothing on the replica: its
    prompt is no footprint to hold. Sized by it, a refused 3x-the-replica prompt stayed reserved for
    `max_hold_s` and new work waited. The reservation lapses; the workflow stays bound, and its next call
    reserves again at once."""
    core, clock = served_once("agent", "tool_calls")
    assert core.admission is not None
    second = call("agent", prompt_tokens=3 * CAPACITY)
    only_dispatch(core.request_arrived(second))
    clock.now = 2.0
    core.request_finished(second.request_id, None)
    assert core.admission.reserved["r0"] == 0
    only_dispatch(core.request_arrived(call("other", prompt_tokens=60_000)))  # room at once
    retry = call("agent", prompt_tokens=61_000)
    assert only_dispatch(core.request_arrived(retry)).replica_id == "r0"  # still bound, never held back
    assert core.admission.workflows["agent"].reserved > 0


def test_a_full_admission_queue_answers_429_and_no_healthy_replica_503() -> None:
    admission = AdmissionSpec(max_waiting=2)
    core, _ = make_core(replicas=1, spec=saga_spec(admission=admission))
    only_dispatch(core.request_arrived(call("big", prompt_tokens=10 * CAPACITY)))
    assert core.request_arrived(call("w1")) == [] and core.request_arrived(call("w2")) == []
    (refused,) = core.request_arrived(call("w3"))
    assert isinstance(refused, Reject) and refused.status == 429
    core.replica_stats(ReplicaStats("r0", healthy=False))
    (down,) = core.request_arrived(call("w4"))
    assert isinstance(down, Reject) and down.status == 503


def test_a_workflow_that_waited_max_wait_s_is_admitted_room_or_not_oldest_first() -> None:
    spec = saga_spec(admission=AdmissionSpec(max_wait_s=30.0))
    core, clock = make_core(replicas=2, spec=spec)
    assert core.admission is not None
    for r in ("r0", "r1"):  # both replicas full: every new workflow waits
        only_dispatch(core.request_arrived(call(f"big-{r}", prompt_tokens=10 * CAPACITY)))
    first, second = call("first"), call("second")
    assert core.request_arrived(first) == []
    clock.now = 10.0
    assert core.request_arrived(second) == []
    clock.now = 29.9
    assert core.tick() == []  # not yet: both still wait
    clock.now = 30.0
    (admitted,) = core.tick()
    assert isinstance(admitted, Dispatch) and admitted.request_id == first.request_id
    assert core.admission.is_admitted("first") and core.admission.is_waiting("second")
    assert core.admission.reserved[admitted.replica_id] > 10 * CAPACITY  # it reserves its footprint there
    clock.now = 45.0  # a new workflow's arrival admits what is overdue too, not only the housekeeping tick
    third = call("third")
    assert [d.request_id for d in core.request_arrived(third)] == [second.request_id]
    assert core.admission.is_waiting("third")
    assert core.admission.snapshot()["admitted_overdue"] == 2
    scrape = ProxyMetrics().response(core).body
    assert isinstance(scrape, bytes) and b"\nsaga_admitted_past_max_wait_total 2.0\n" in scrape


def test_without_max_wait_s_a_workflow_waits_for_room_however_long() -> None:
    assert AdmissionSpec().max_wait_s == 300.0  # the default bound
    core, clock = make_core(replicas=1, spec=saga_spec(admission=AdmissionSpec(max_wait_s=None)))
    assert core.admission is not None
    only_dispatch(core.request_arrived(call("big", prompt_tokens=10 * CAPACITY)))
    assert core.request_arrived(call("w")) == []
    clock.now = 100_000.0
    assert core.tick() == [] and core.admission.is_waiting("w")


def test_an_overdue_call_with_no_healthy_replica_is_refused_and_a_withdrawn_one_is_skipped() -> None:
    core, clock = make_core(replicas=1, spec=saga_spec(admission=AdmissionSpec(max_wait_s=5.0)))
    assert core.admission is not None
    only_dispatch(core.request_arrived(call("big", prompt_tokens=10 * CAPACITY)))
    gone, stays = call("gone"), call("stays")
    assert core.request_arrived(gone) == [] and core.request_arrived(stays) == []
    assert core.request_cancelled(gone.request_id) == []
    clock.now = 5.0
    core.replicas["r0"].healthy = False  # (as a shell's own view would say, no event yet)
    (refused,) = core.tick()
    assert isinstance(refused, Reject) and refused.request_id == stays.request_id and refused.status == 503
    assert not core.admission.is_waiting("stays") and not core.admission.is_admitted("stays")


@pytest.mark.parametrize("bad", [0.0, -1.0, math.inf, math.nan])
def test_max_wait_s_must_be_positive_and_finite(bad: float) -> None:
    with pytest.raises(ConfigError, match="max_wait_s"):
        AdmissionSpec(max_wait_s=bad).validate()


@pytest.mark.parametrize("bad", [-1.0, math.inf, math.nan])
def test_horizon_calls_must_be_finite(bad: float) -> None:
    """Found by an operator's review: `admission.horizon_calls: .inf` passed the start, then every new
    workflow's footprint (a whole number of tokens) failed: a 500 on every call."""
    with pytest.raises(ConfigError, match=r"admission\.horizon_calls"):
        AdmissionSpec(horizon_calls=bad).validate()


def test_a_waiting_call_whose_client_leaves_is_withdrawn_and_its_session_can_be_forgotten() -> None:
    core, clock = make_core(replicas=1, session_idle_ttl_s=10.0)
    only_dispatch(core.request_arrived(call("big", prompt_tokens=10 * CAPACITY)))
    waiting = call("w")
    assert core.request_arrived(waiting) == []
    clock.now = 100.0
    core.tick()
    assert "w" in core.sessions  # a waiting call keeps its session
    assert core.request_cancelled(waiting.request_id) == []
    assert core.admission is not None and not core.admission.is_waiting("w")
    # none of its calls was ever served: it goes with its call (an operator's review: abandoned first calls
    # were listed as sessions of no call for the idle TTL, an hour)
    assert "w" not in core.sessions and "w" not in core.admission.workflows


def test_a_quiet_workflow_lapses_its_reservation_and_comes_back_at_once() -> None:
    core, clock = served_once("person", "stop")
    assert core.admission is not None
    assert core.admission.reserved["r0"] > 0
    blocked = call("other", prompt_tokens=60_000)
    assert core.request_arrived(blocked) == []
    clock.now = 40.0  # past the hold: the person went quiet, their reservation lapses
    released = core.tick()
    assert [d.request_id for d in released] == [blocked.request_id]
    back = only_dispatch(core.request_arrived(call("person", prompt_tokens=61_000)))
    assert back.replica_id == "r0"  # admitted before: it does not wait behind new work


def test_new_workflows_are_admitted_fairly_across_tenants() -> None:
    core, clock = make_core(replicas=1)
    only_dispatch(core.request_arrived(big := call("big", prompt_tokens=10 * CAPACITY)))
    for i in range(6):
        assert core.request_arrived(call(f"a{i}", prompt_tokens=1_000, tenant="a")) == []
    for i in range(2):
        assert core.request_arrived(call(f"b{i}", prompt_tokens=1_000, tenant="b")) == []
    clock.now = 1.0
    released = core.request_finished(big.request_id, Usage(10 * CAPACITY, 1, finish_reason="stop"))
    released += core.session_ended("big") + core.tick()
    tenants = [core.in_flight[d.request_id].req.tenant_id for d in released]
    assert tenants[:4] == ["a", "b", "a", "b"]  # alternating by weight, not first come first served


def test_work_stealing_moves_a_call_from_a_congested_replica_to_an_idle_one() -> None:
    core, clock = make_core(replicas=2)
    a = only_dispatch(core.request_arrived(req_a := call("a", prompt_tokens=2_000)))
    b = only_dispatch(core.request_arrived(call("b", prompt_tokens=2_000)))
    assert a.replica_id != b.replica_id
    clock.now = 1.0
    core.request_finished(req_a.request_id, Usage(2_000, 100, finish_reason="tool_calls"))
    # a's replica now has a long engine queue (other clients' work); b's is busy with b
    core.replica_stats(ReplicaStats(a.replica_id, waiting=20, running=2))
    moved = only_dispatch(core.request_arrived(call("a", prompt_tokens=2_500)))
    assert moved.replica_id == a.replica_id  # the other replica has a call in flight: not idle
    core.request_finished(moved.request_id, Usage(2_500, 100, finish_reason="tool_calls"))
    core.request_finished(next(iter(core.in_flight)), Usage(2_000, 100, finish_reason="tool_calls"))
    moved = only_dispatch(core.request_arrived(call("a", prompt_tokens=3_000)))
    assert moved.replica_id == b.replica_id and core.moves == 1
    assert core.admission is not None and core.admission.workflows["a"].replica_id == b.replica_id
    follow = only_dispatch(core.request_arrived(call("a", prompt_tokens=3_500)))
    assert follow.replica_id == b.replica_id  # the prefix lives there now: the binding followed


def test_stealing_stays_when_the_wait_is_cheaper_than_recomputing() -> None:
    spec = StealingSpec(call_s=1.0)
    bound = ReplicaView("r0", waiting=1, running=4)
    idle = ReplicaView("r1")
    big = RequestInfo("q", "s", 0.0, prompt_tokens=100_000)
    assert recompute_s(spec, 100_000) > 1.0 / 4
    assert steal_target(spec, big, bound, [bound, idle], lambda _: True) is None
    small = RequestInfo("q", "s", 0.0, prompt_tokens=100)
    assert steal_target(spec, small, bound, [bound, idle], lambda _: True) == "r1"
    assert steal_target(spec, small, bound, [bound, idle], lambda _: False) is None


def test_stealing_weighs_what_the_bound_replica_still_caches() -> None:
    """With the replicas' KV events (RequestInfo.kv_resident), staying saves only the re-prefill of the part
    the bound replica still holds: a workflow whose KV it evicted moves for a wait that would keep it."""
    spec = StealingSpec(call_s=1.0)
    bound = ReplicaView("r0", waiting=1, running=4)
    idle = ReplicaView("r1")
    replicas = [bound, idle]
    held_all = RequestInfo("q", "s", 0.0, prompt_tokens=100_000, kv_resident={"r0": 100_000})
    assert steal_target(spec, held_all, bound, replicas, lambda _: True) is None
    evicted = RequestInfo("q", "s", 0.0, prompt_tokens=100_000, kv_resident={"r0": 0})
    assert steal_target(spec, evicted, bound, replicas, lambda _: True) == "r1"
    mostly = RequestInfo("q", "s", 0.0, prompt_tokens=100_000, kv_resident={"r0": 99_900})
    assert steal_target(spec, mostly, bound, replicas, lambda _: True) is None
    # a replica the events do not cover (or where the session stored nothing): as without events
    unknown = RequestInfo("q", "s", 0.0, prompt_tokens=100_000, kv_resident={"r1": 0})
    assert steal_target(spec, unknown, bound, replicas, lambda _: True) is None
    # no backlog: nothing to save by moving, evicted or not
    calm = ReplicaView("r0", running=4)
    assert steal_target(spec, evicted, calm, [calm, idle], lambda _: True) is None


def test_rebalancing_moves_a_workflow_off_a_replica_whose_reservations_outgrew_its_kv() -> None:
    spec = StealingSpec(rebalance_above=1.0)
    full = ReplicaView("r0", kv_capacity_tokens=100_000, reserved_tokens=120_000, waiting=1, running=3)
    roomy = ReplicaView("r1", kv_capacity_tokens=100_000, reserved_tokens=20_000, running=2, in_flight=2)
    tight = ReplicaView("r2", kv_capacity_tokens=100_000, reserved_tokens=60_000, running=1, in_flight=1)
    req = RequestInfo("q", "s", 0.0, prompt_tokens=30_000)
    replicas = [full, tight, roomy]
    # not idle (calls in flight), yet it has the most free KV for the workflow: it goes there
    assert steal_target(spec, req, full, replicas, lambda _: True, footprint=30_000) == "r1"
    # a footprint no replica fits under the limit: stay (idle-only stealing finds nothing either)
    assert steal_target(spec, req, full, replicas, lambda _: True, footprint=90_000) is None
    # no backlog on the bound replica, or its reservations within its KV: stay
    calm = msgspec.structs.replace(full, waiting=0)
    assert steal_target(spec, req, calm, [calm, tight, roomy], lambda _: True, footprint=30_000) is None
    within = msgspec.structs.replace(full, reserved_tokens=90_000)
    assert steal_target(spec, req, within, [within, tight, roomy], lambda _: True, footprint=30_000) is None
    # a target with a backlog of its own is no relief
    busy = msgspec.structs.replace(roomy, waiting=2)
    assert steal_target(spec, req, full, [full, tight, busy], lambda _: True, footprint=30_000) == "r2"
    # off unless configured
    assert steal_target(StealingSpec(), req, full, replicas, lambda _: True, footprint=30_000) is None


def test_bad_saga_settings_fail_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"admission\.overcommit"):
        build_policy(saga_spec(admission=AdmissionSpec(overcommit=0)))
    with pytest.raises(ConfigError, match=r"stealing\.call_s"):
        build_policy(saga_spec(stealing=StealingSpec(call_s=-1)))
    with pytest.raises(ConfigError, match=r"stealing\.rebalance_above"):
        build_policy(saga_spec(stealing=StealingSpec(rebalance_above=0)))
    with pytest.raises(msgspec.ValidationError, match="horizon"):
        msgspec.convert({"horizon": 3}, AdmissionSpec)


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["call", "finish", "tick", "end", "cancel", "down", "up"]),
            st.integers(0, 7),
            st.integers(500, 80_000),
        ),
        max_size=60,
    )
)
def test_every_call_gets_one_outcome_and_reservations_match_live_workflows(
    ops: list[tuple[str, int, int]],
) -> None:
    core, clock = make_core(replicas=3)
    assert core.admission is not None
    outcomes: dict[str, str] = {}
    arrived: list[str] = []

    def apply(decisions: list[Decision]) -> None:
        for d in decisions:
            assert d.request_id not in outcomes, "two outcomes for one call"
            outcomes[d.request_id] = type(d).__name__

    for op, n, tokens in ops:
        clock.now += 1.0
        session = f"s{n}"
        if op == "call":
            req = call(session, prompt_tokens=tokens)
            arrived.append(req.request_id)
            apply(core.request_arrived(req))
        elif op == "finish" and core.in_flight:
            rid = sorted(core.in_flight)[n % len(core.in_flight)]
            apply(core.request_finished(rid, Usage(tokens, 100, finish_reason="tool_calls")))
        elif op == "tick":
            clock.now += 100.0
            apply(core.tick())
        elif op == "end":
            apply(core.session_ended(session))
        elif op == "cancel":
            waiting = [r for r in arrived if r not in outcomes]
            if waiting:
                rid = waiting[n % len(waiting)]
                apply(core.request_cancelled(rid))
                outcomes[rid] = "cancelled"
        elif op in ("down", "up"):
            apply(core.replica_stats(ReplicaStats(f"r{n % 3}", healthy=op == "up")))
        for rid, view in core.replicas.items():
            live = sum(w.reserved for w in core.admission.workflows.values() if w.replica_id == rid)
            assert view.reserved_tokens == core.admission.reserved.get(rid, 0) == live
    # Everything still waiting is answered once a replica is up and everything in flight has finished.
    for r in core.replicas:
        apply(core.replica_stats(ReplicaStats(r, healthy=True)))
    for _ in range(len(arrived) + 1):
        for rid in list(core.in_flight):
            apply(core.request_finished(rid, Usage(1, 1, finish_reason="stop")))
        for sid in list(core.sessions):
            apply(core.session_ended(sid))
        clock.now += 1000.0
        apply(core.tick())
    assert set(outcomes) == set(arrived)


def test_the_bound_replica_shortcut_applies_only_where_affinity_outweighs_every_other_scorer() -> None:
    assert build_policy("saga").affinity_decides
    assert build_policy("session-affinity").affinity_decides
    assert not build_policy("prefix-load").affinity_decides  # no affinity scorer
    balanced = saga_spec(
        scorers=[
            msgspec.convert({"type": "session-affinity-scorer", "weight": 1.0}, PluginSpec),
            msgspec.convert({"type": "least-request-scorer", "weight": 1.0}, PluginSpec),
        ]
    )
    assert not build_policy(balanced).affinity_decides  # load could outvote the binding: score every replica


def test_an_interactive_tenant_goes_before_older_batch_workflows() -> None:
    from fairness import TenantsConfig, TenantSpec

    tenants = TenantsConfig(
        tenants={"chat": TenantSpec(slo_class="interactive"), "batch": TenantSpec(slo_class="batch")}
    )
    core, _ = make_core(replicas=1, tenants=tenants)
    batch = only_dispatch(core.request_arrived(call("old-batch", prompt_tokens=1_000, tenant="batch")))
    chat = only_dispatch(core.request_arrived(call("new-chat", prompt_tokens=1_000, tenant="chat")))
    later_batch = only_dispatch(core.request_arrived(call("new-batch", prompt_tokens=1_000, tenant="batch")))
    assert chat.priority is not None and batch.priority is not None and later_batch.priority is not None
    assert chat.priority < batch.priority < later_batch.priority


def test_least_work_admits_short_agent_types_first_but_never_starves_long_ones() -> None:
    from tests.predictor.streams import feed_sessions

    spec = saga_spec(admission=AdmissionSpec(order="least-work"))
    core, clock = make_core(replicas=1, spec=spec)
    assert core.admission is not None
    predictor = core.predictor
    # Two agent types with the same steps; "long" answers the person six times before it ends, "short" once.
    short_end = feed_sessions(predictor, 60, agent_type="short", end_after_answers=1)
    long_end = feed_sessions(predictor, 60, agent_type="long", end_after_answers=6, seed=1)
    clock.now = max(short_end, long_end) + 1.0

    def new(session: str, agent_type: str) -> RequestInfo:
        return msgspec.structs.replace(call(session, prompt_tokens=80_000), agent_type=agent_type)

    busy = new("busy", "short")
    only_dispatch(core.request_arrived(busy))  # the replica holds one 80k workflow at a time
    long_req, short_req = new("long-1", "long"), new("short-1", "short")
    assert core.request_arrived(long_req) == []
    clock.now += 1.0
    assert core.request_arrived(short_req) == []
    long_work = predictor.expected_work_s("long-1")
    short_work = predictor.expected_work_s("short-1")
    assert long_work is not None and short_work is not None and long_work > short_work + 1.0
    clock.now += 1.0
    admitted = core.request_finished(busy.request_id, Usage(80_000, 10, finish_reason="stop"))
    admitted += core.session_ended("busy")
    # The later but shorter workflow goes first...
    assert [d.request_id for d in admitted] == [short_req.request_id]
    # ...but one that arrives after the long one waited longer than the difference in work does not.
    late_short = new("short-2", "short")
    clock.now += long_work - short_work + 1.0
    assert core.request_arrived(late_short) == []
    admitted = core.request_finished(short_req.request_id, Usage(80_000, 10, finish_reason="stop"))
    admitted += core.session_ended("short-1")
    assert [d.request_id for d in admitted] == [long_req.request_id]


def test_measured_room_admits_past_full_reservations_only_where_the_kv_is_free_and_nothing_waits() -> None:
    for measured in (False, True):
        core, _ = make_core(replicas=1, spec=saga_spec(admission=AdmissionSpec(measured_room=measured)))
        assert core.admission is not None
        footprint = core.admission.footprint_of_new(call("x", prompt_tokens=30_000))
        fits = int(CAPACITY * core.admission.spec.overcommit) // footprint
        for i in range(fits):
            only_dispatch(core.request_arrived(call(f"s{i}", prompt_tokens=30_000)))
        # the live workflows are between calls (tool time): the engine reports its KV mostly free
        core.replica_stats(ReplicaStats("r0", kv_usage=0.1, waiting=0))
        admitted = core.request_arrived(call("new", prompt_tokens=30_000))
        assert len(admitted) == (1 if measured else 0)
        if measured:  # a call waiting in the engine: the measured room does not count
            core.replica_stats(ReplicaStats("r0", kv_usage=0.1, waiting=1))
            assert core.request_arrived(call("newer", prompt_tokens=30_000)) == []


@pytest.mark.parametrize("cpu_tier", ["offload", "hold"])
def test_a_replica_with_a_cpu_kv_tier_gets_no_retention_unless_the_policy_holds_there(cpu_tier: str) -> None:
    params = {"priority_base_s": None, "cold_ttl_s": 30.0, "cpu_tier": cpu_tier}
    spec = saga_spec(retention=PluginSpec("predicted-ttl-retention", params=params))
    for tier, expected in ((False, 30.0), (True, None if cpu_tier == "offload" else 30.0), (False, 30.0)):
        core, _ = make_core(replicas=1, spec=spec)
        seen_back(core)  # (a type whose sessions go on: their first calls are retained)
        core.replica_stats(ReplicaStats("r0", cpu_kv_tier=tier))
        assert only_dispatch(core.request_arrived(call(f"tier-{tier}"))).retain_ttl_s == expected
    # a later scrape that says nothing of the tier keeps what the first said
    core, _ = make_core(replicas=1, spec=spec)
    seen_back(core)
    core.replica_stats(ReplicaStats("r0", cpu_kv_tier=True))
    core.replica_stats(ReplicaStats("r0", waiting=0))
    held = only_dispatch(core.request_arrived(call("later"))).retain_ttl_s
    assert held == (30.0 if cpu_tier == "hold" else None)


def test_continuum_ttl_holds_on_a_replica_with_a_cpu_kv_tier_as_continuum_does() -> None:
    core, _ = make_core(replicas=1, spec=PRESETS["continuum-ttl"])
    core.replica_stats(ReplicaStats("r0", cpu_kv_tier=True))
    assert only_dispatch(core.request_arrived(call("c"))).retain_ttl_s is not None


def test_an_unknown_cpu_tier_setting_fails_naming_the_key() -> None:
    spec = saga_spec(retention=PluginSpec("predicted-ttl-retention", params={"cpu_tier": "ssd"}))
    with pytest.raises(ConfigError, match="cpu_tier"):
        build_policy(spec, seed=0)


def _priced_core(price: float | None, s_per_token: float) -> tuple[SchedulerCore, list[Decision]]:
    """One replica, a retained call's workflow `held` finished, a new workflow waiting behind it; the
    replicas' prefill rate learned as `s_per_token` (from calls' first tokens, as the core feeds them).
    Returns the core and what the finish decided."""
    admission = AdmissionSpec(overcommit=1.0, hold_price=price, price_max_gap_s=1e6)
    retention = PluginSpec("predicted-ttl-retention", params={"priority_base_s": None, "cold_ttl_s": 30.0})
    core, clock = make_core(replicas=1, spec=saga_spec(admission=admission, retention=retention))
    assert core.admission is not None
    seen_back(core)
    for _ in range(16):  # 4,000 tokens computed after 1,000 cached, at `s_per_token`
        core.admission.prefill_seen(s_per_token * 4_000 * (1 + 3_000 / 20_000), 5_000, 1_000)
    held = call("held", prompt_tokens=60_000)
    assert only_dispatch(core.request_arrived(held)).retain_ttl_s == 30.0
    assert core.request_arrived(call("waiting", prompt_tokens=60_000)) == []  # no room: it waits
    clock.now = 1.0
    usage = Usage(60_000, 100, finish_reason="tool_calls", tool_names=("bash",))
    return core, core.request_finished(held.request_id, usage)


def test_a_hold_that_costs_waiting_workflows_more_than_its_re_prefill_lets_go_at_once() -> None:
    cheap, decided = _priced_core(price=1.0, s_per_token=1e-7)  # a re-prefill of 60k tokens: ~10 ms
    assert cheap.admission is not None and cheap.admission.let_go == 1
    # its reservation lapsed: the waiting workflow is admitted by the finish itself, and the retention goes
    assert len(decided) == 1 and only_dispatch(decided).replica_id == "r0"
    assert cheap.take_releases() == [("held", "r0")]
    back = only_dispatch(cheap.request_arrived(call("held", prompt_tokens=61_000)))
    assert back.replica_id == "r0"  # admitted before: it comes back at once, without waiting
    for price, rate in ((None, 1e-7), (1.0, 1e-2)):  # switched off, or a re-prefill that costs minutes
        kept, decided = _priced_core(price=price, s_per_token=rate)
        assert kept.admission is not None and kept.admission.let_go == 0
        assert decided == []
        assert kept.take_releases() == []


def test_a_cheap_hold_goes_only_while_work_waits_for_kv_and_once_the_prefill_cost_is_learned() -> None:
    spec = saga_spec(admission=AdmissionSpec(overcommit=1.0, hold_price=1.0, price_max_gap_s=1e6))
    # (learned, a new workflow waits in the proxy, calls wait in the replica's engine) -> let go
    for learned, proxy_waits, engine_waits, let_go in (
        (True, False, False, False),  # nothing waits: the hold delays no one
        (True, False, True, True),  # calls wait in its replica's engine for KV
        (True, True, False, True),
        (False, True, True, False),  # what a re-prefill costs is not known yet
    ):
        core, clock = make_core(replicas=1, spec=spec)
        assert core.admission is not None
        seen_back(core)
        for _ in range(16 if learned else 0):
            core.admission.prefill_seen(1e-7 * 4_000, 5_000, 1_000)
        req = call("alone", prompt_tokens=60_000)
        only_dispatch(core.request_arrived(req))
        if proxy_waits:
            assert core.request_arrived(call("waiting", prompt_tokens=60_000)) == []
        core.replica_stats(ReplicaStats("r0", waiting=3 if engine_waits else 0))
        clock.now = 1.0
        core.request_finished(req.request_id, Usage(60_000, 100, finish_reason="tool_calls"))
        assert core.admission.let_go == int(let_go)
        assert (core.admission.reserved["r0"] == 0) == (let_go and not proxy_waits)


def test_the_prefill_rate_is_a_low_quantile_of_first_tokens_over_the_computed_tokens() -> None:
    rate = PrefillRate(attention_tokens=20_000.0)
    assert rate.recompute_s(10_000) is None  # nothing learned: unknown
    for queued_s in (0.0, 0.0, 5.0, 9.0, 3.0, 0.0, 7.0, 2.0):  # calls that waited in the engine count too
        rate.observe(2e-5 * 4_000 * (1 + 3_000 / 20_000) + queued_s, 5_000, 1_000)
    rate.observe(0.001, 5_000, 0)  # no cached tokens reported: not counted
    rate.observe(0.001, 1_100, 1_000)  # too few tokens computed: not counted
    rate.observe(0.001, 1_000, 5_000)  # more cached than the prompt (a replica's odd usage): not counted
    assert rate.s_per_token == pytest.approx(2e-5)
    assert rate.recompute_s(20_000) == pytest.approx(20_000 * 2e-5 * 1.5)


@pytest.mark.parametrize("ttft_s", [math.nan, math.inf, -1.0, 0.0])
def test_unusable_first_token_times_teach_the_prefill_rate_nothing(ttft_s: float) -> None:
    rate = PrefillRate(attention_tokens=20_000.0)
    for _ in range(16):
        rate.observe(ttft_s, 5_000, 1_000)
    assert rate.s_per_token is None and rate.recompute_s(10_000) is None


def test_an_agent_type_whose_holds_run_out_unused_stops_holding_between_calls() -> None:
    """One-shot sessions naming ids of their own (a client sending a fresh X-Session-ID per call) held
    their reservation for `max_hold_s` each: over HTTP 2,400 of them filled a 1.6M-token replica and the next
    new workflow waited ~2 minutes. Once MIN_HOLD_OUTCOMES of a type's holds are known and fewer than
    `end_below_p_return` of them had a call come back, its workflows lapse after each call (a finish every
    HOLD_PROBE_S still holds); a type whose calls come back keeps holding."""
    views = {"r0": ReplicaView("r0", kv_capacity_tokens=10_000_000)}
    # sessions the predictor has not been told of: each call's reservation holds for `max_hold_s`
    admission = WorkflowAdmission(AdmissionSpec(max_hold_s=30.0), Predictor(), views=views)
    now = 0.0

    def one_call(session: str, agent_type: str, prompt: int = 1_000) -> int:
        nonlocal now
        req = msgspec.structs.replace(call(session, prompt_tokens=prompt), agent_type=agent_type)
        if session not in admission.workflows:
            admission.admit(req, "r0", now)
        admission.dispatched(req, "r0")
        now += 0.25
        admission.finished(session, 1_000, 10, now)
        return admission.workflows[session].reserved

    one_call("rare-0", "rare")
    assert one_call("rare-0", "rare", prompt=1_100) > 0  # it went on: it holds from then on
    first_held = []
    for i in range(1, MIN_HOLD_OUTCOMES):  # one-shot sessions of its type: their holds run out unused
        first_held.append(one_call(f"rare-{i}", "rare") > 0)
        now += 31.0
        admission.expire(now)
    # held while a fifth at least of the type's first gaps came back (1 of 1 ... 1 of 5), then no more
    assert first_held[:5] == [True] * 5 and not any(first_held[5:])
    for i in range(MIN_HOLD_OUTCOMES):  # each comes back once within its hold, then ends
        one_call(f"agent-{i}", "agent")
        one_call(f"agent-{i}", "agent", prompt=1_100)
        now += 31.0
        admission.expire(now)
    # went-on sessions of a type whose holds mostly ran out unused: one finish a second holds (a probe)
    held = []
    for i in range(6):  # two a second (each comes back: a few more and the type no longer rarely does)
        one_call(f"late-rare-{i}", "rare")
        held.append(one_call(f"late-rare-{i}", "rare", prompt=1_100) > 0)
    assert held == [True, False] * 3  # a probe a second
    assert one_call("late-agent", "agent") > 0  # its first call: its type's first gaps come back


def test_an_agent_type_not_seen_back_reserves_nothing_between_calls() -> None:
    """Found over HTTP: sequential one-shot calls naming no session (each inferred as a new workflow of one
    agent type) each held ~1,000 tokens of the prior's growth for `max_hold_s` (120 s), so on a 9,600-token
    replica the 15th waited two minutes with nothing running. Until a call of a type comes back into a hold,
    its workflows reserve nothing between calls; the holds' timers still count, so the first return makes
    the type hold, and MIN_HOLD_OUTCOMES holds run out unused teach it to lapse as before."""
    core, clock = make_core(replicas=1, capacity=10_000)
    assert core.admission is not None
    for i in range(3 * MIN_HOLD_OUTCOMES):  # each fills most of the replica while it runs
        req = call(f"shot-{i}", prompt_tokens=5_000)
        assert only_dispatch(core.request_arrived(req)).replica_id == "r0"  # never waits
        clock.now += 1.0
        core.request_finished(req.request_id, Usage(5_000, 10, finish_reason="stop"))
        assert core.admission.reserved["r0"] == 0
        clock.now += 1.0
        core.tick()
    # an agent of the same type comes back within its hold: the type holds from then on
    first = call("agent", prompt_tokens=1_000)
    only_dispatch(core.request_arrived(first))
    clock.now += 1.0
    core.request_finished(first.request_id, Usage(1_000, 10, finish_reason="tool_calls"))
    assert core.admission.reserved["r0"] == 0
    again = call("agent", prompt_tokens=1_100)
    only_dispatch(core.request_arrived(again))
    clock.now += 1.0
    core.request_finished(again.request_id, Usage(1_100, 10, finish_reason="tool_calls"))
    assert core.admission.reserved["r0"] > 0


def test_a_call_repeating_its_sessions_last_prompt_does_not_count_as_come_back() -> None:
    """Found over HTTP: a load test sending one fixed prompt from 16 clients stalled for two minutes after
    ~200 calls on a 64k-token replica. Inference joins calls repeating an opening into one session while
    its first call is not running (the others get ids of their own), so that session's calls came back
    into its holds and proved the type; then every one-shot fork held ~1,000 tokens for `max_hold_s`."""
    core, clock = make_core(replicas=1, capacity=10_000)
    assert core.admission is not None
    for i in range(3 * MIN_HOLD_OUTCOMES):
        same = call("opening", prompt_tokens=5_000)  # the joined session: the same prompt each time
        fork = call(f"opening-{i}", prompt_tokens=5_000)
        for req in (same, fork):
            assert only_dispatch(core.request_arrived(req)).replica_id == "r0"  # never waits
        clock.now += 1.0
        for req in (same, fork):
            core.request_finished(req.request_id, Usage(5_000, 10, finish_reason="stop"))
        assert core.admission.reserved["r0"] == 0
        clock.now += 1.0
        core.tick()


def test_holds_sized_from_the_prior_yield_to_waiting_workflows_on_an_idle_replica() -> None:
    """Found by an operator's review over HTTP: ten 3-call agents (1 s tool gaps) on a 3,200-token replica;
    the first three ended, their last holds sized from the predictor's prior (fewer than `min_samples` gaps
    seen) lasted `max_hold_s`, and the replica sat idle 120 s with eight workflows waiting. Now, while work
    waits, such holds on a replica with no call in flight lapse at the next tick; a call in flight there, or
    a hold sized from gaps the type showed, keeps them."""
    core, clock = make_core(replicas=1)
    assert core.admission is not None
    seen_back(core)
    footprint = core.admission.footprint_of_new(call("x", prompt_tokens=30_000))
    fits = int(CAPACITY * core.admission.spec.overcommit) // footprint
    first = [call(f"s{i}", prompt_tokens=30_000) for i in range(fits)]
    for req in first:
        only_dispatch(core.request_arrived(req))
    late = [call(f"late{i}", prompt_tokens=30_000) for i in range(2)]
    for req in late:
        assert core.request_arrived(req) == []  # no room: they wait
    clock.now = 1.0
    for req in first[:-1]:  # each answers without a tool call and is never heard from again
        core.request_finished(req.request_id, Usage(30_000, 200, finish_reason="stop"))
    clock.now = 2.0
    assert core.tick() == []  # a call still runs there: the holds stay
    core.request_finished(first[-1].request_id, Usage(30_000, 200, finish_reason="stop"))
    clock.now = 3.0
    admitted = core.tick()  # nothing runs there now: the prior's holds go
    assert sorted(d.request_id for d in admitted) == sorted(r.request_id for r in late)
    assert core.admission.yielded == fits
    assert core.admission.snapshot()["yielded"] == fits


def test_holds_sized_from_gaps_the_type_showed_do_not_yield() -> None:
    core, clock = make_core(replicas=1)
    assert core.admission is not None
    seen_back(core)
    for i in range(12):  # a dozen agents teach the type its gaps: 1 s tool calls
        prompt = 1_000
        for _ in range(3):
            req = call(f"teach{i}", prompt_tokens=prompt)
            only_dispatch(core.request_arrived(req))
            clock.now += 1.0
            core.request_finished(req.request_id, Usage(prompt, 100, finish_reason="tool_calls"))
            clock.now += 1.0
            prompt += 200
        core.session_ended(f"teach{i}")
    core.take_releases()
    footprint = core.admission.footprint_of_new(call("x", prompt_tokens=30_000))
    fits = int(CAPACITY * core.admission.spec.overcommit) // footprint
    first = [call(f"s{i}", prompt_tokens=30_000) for i in range(fits)]
    for req in first:
        only_dispatch(core.request_arrived(req))
    assert core.request_arrived(call("late", prompt_tokens=30_000)) == []
    clock.now += 0.5
    for req in first:
        core.request_finished(req.request_id, Usage(30_000, 200, finish_reason="tool_calls"))
    clock.now += 0.1
    assert core.tick() == [] and core.admission.yielded == 0  # back within ~1 s, as the type showed


def mixed_fleet(small: int = 4_000, big: int = CAPACITY) -> tuple[SchedulerCore, Clock]:
    """r0 big, r1 small (a review's mixed fleet: 64k and 4k tokens of KV)."""
    core, clock = make_core(replicas=2, capacity=None)
    core.replica_stats(ReplicaStats("r0", kv_capacity_tokens=big))
    core.replica_stats(ReplicaStats("r1", kv_capacity_tokens=small))
    seen_back(core)
    return core, clock


def test_a_prompt_past_a_replicas_kv_never_goes_there_while_another_takes_it() -> None:
    """The review's fleet: every new session with a ~5.3k-token prompt went to the idle 4k replica (it had
    nothing reserved, so it 'had room', and scored highest on KV headroom) and was refused with a 400."""
    core, _ = mixed_fleet()
    for i in range(8):
        assert only_dispatch(core.request_arrived(call(f"s{i}", prompt_tokens=5_300))).replica_id == "r0"
    # the big replica full, such a workflow waits for it rather than failing on the small one
    core.replica_stats(ReplicaStats("r0", kv_capacity_tokens=20_000))
    assert core.request_arrived(call("late", prompt_tokens=5_300)) == []
    assert core.admission is not None and core.admission.is_waiting("late")


def test_an_empty_small_replica_takes_a_workflow_larger_than_it_only_when_no_replica_has_room() -> None:
    core, _ = mixed_fleet(small=1_500)
    assert core.admission is not None
    footprint = core.admission.footprint_of_new(call("x", prompt_tokens=1_400))
    assert footprint > 1_500 * core.admission.spec.overcommit  # larger than the small replica's limit
    assert only_dispatch(core.request_arrived(call("a", prompt_tokens=1_400))).replica_id == "r0"
    # no replica has room under its limit: the empty small one runs it alone, as before
    core.replica_stats(ReplicaStats("r0", kv_capacity_tokens=footprint))
    assert only_dispatch(core.request_arrived(call("b", prompt_tokens=1_400))).replica_id == "r1"


@pytest.mark.parametrize("how", ["grew", "restarted smaller"])
def test_a_workflow_whose_prompt_outgrew_its_replicas_kv_moves(how: str) -> None:
    """A conversation that outgrew a small replica, or whose replica restarted with less KV, stayed bound
    there, and every later call was refused (the 400 of a prompt past the context): 4 of 8 agents failed."""
    core, clock = mixed_fleet(small=CAPACITY if how == "restarted smaller" else 4_000)
    first = call("agent", prompt_tokens=1_500)
    bound = only_dispatch(core.request_arrived(first)).replica_id
    if bound != "r1":  # (placed on the big one: move it to the small one as a replica change would)
        core.admission.workflows["agent"].replica_id = "r1"  # type: ignore[union-attr]
    clock.now += 1.0
    core.request_finished(first.request_id, Usage(1_500, 100, finish_reason="tool_calls"))
    if how == "restarted smaller":
        core.replica_stats(ReplicaStats("r1", kv_capacity_tokens=4_000))
    clock.now += 1.0
    fits = call("agent", prompt_tokens=3_500)  # still within its replica's KV: stays
    assert only_dispatch(core.request_arrived(fits)).replica_id == "r1"
    core.request_finished(fits.request_id, Usage(3_500, 100, finish_reason="tool_calls"))
    moves = core.moves
    outgrown = call("agent", prompt_tokens=4_500)
    assert only_dispatch(core.request_arrived(outgrown)).replica_id == "r0"
    assert core.moves == moves + 1
    assert core.admission is not None and core.admission.workflows["agent"].replica_id == "r0"


def test_a_prompt_no_replica_takes_goes_at_once_to_one_of_them() -> None:
    core, _ = mixed_fleet(small=4_000, big=8_000)
    only_dispatch(core.request_arrived(call("huge", prompt_tokens=50_000)))  # refused there, not queued
