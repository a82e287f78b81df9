"""Calls pinned to the one replica holding what they continue (a Responses API `previous_response_id`): every
policy, admission, work stealing and retries leave them there, and a pin that cannot be kept is refused."""

from __future__ import annotations

import msgspec

from proxy.scheduler import (
    Dispatch,
    Reject,
    ReplicaStats,
    RequestInfo,
    SchedulerCore,
    Usage,
    build_policy,
)
from proxy.scheduler.registry import PRESETS, PluginSpec
from proxy.scheduler.release import ReleaseQueueSpec
from tests.clocks import Clock
from tests.scheduler.test_saga_policy import CAPACITY, call, make_core, only_dispatch


def pinned(req: RequestInfo, replica: str) -> RequestInfo:
    return msgspec.structs.replace(req, pinned_replica=replica)


def test_work_stealing_leaves_a_pinned_call_on_its_replica() -> None:
    core, clock = make_core(replicas=2)
    a = only_dispatch(core.request_arrived(first := call("a", prompt_tokens=2_000)))
    clock.now = 1.0
    core.request_finished(first.request_id, Usage(2_000, 100, finish_reason="tool_calls"))
    # a's replica has a long engine queue and the other is idle: an unpinned call of "a" is stolen ...
    core.replica_stats(ReplicaStats(a.replica_id, waiting=20, running=2))
    probe = only_dispatch(core.request_arrived(call("a", prompt_tokens=3_000)))
    assert probe.replica_id != a.replica_id and core.moves == 1
    core.request_finished(probe.request_id, Usage(3_000, 100, finish_reason="tool_calls"))
    # ... but a call that continues a response stored on a's first replica stays there
    stay = only_dispatch(core.request_arrived(pinned(call("a", prompt_tokens=3_500), a.replica_id)))
    assert stay.replica_id == a.replica_id and core.moves == 1


def test_a_pinned_call_of_an_unknown_session_skips_admission_and_placement() -> None:
    core, _ = make_core(replicas=2)
    busy = only_dispatch(core.request_arrived(call("busy", prompt_tokens=20_000)))
    # placement would send a new workflow to the emptier replica; the pin wins and the workflow binds there
    d = only_dispatch(core.request_arrived(pinned(call("forgotten"), busy.replica_id)))
    assert d.replica_id == busy.replica_id
    assert core.admission is not None and core.admission.workflows["forgotten"].replica_id == busy.replica_id
    follow = only_dispatch(core.request_arrived(call("forgotten")))
    assert follow.replica_id == busy.replica_id


def test_a_pinned_call_that_fails_is_not_retried_on_another_replica() -> None:
    core, _ = make_core(replicas=3)
    d = only_dispatch(core.request_arrived(pinned(call("s"), "r1")))
    assert d.replica_id == "r1"
    (refused,) = core.dispatch_failed(d.request_id, replica_down=False)
    assert isinstance(refused, Reject) and refused.status == 502 and "r1" in refused.reason
    assert not core.in_flight and core.replicas["r1"].in_flight == 0
    # unpinned, the same failure is retried elsewhere
    d = only_dispatch(core.request_arrived(call("t")))
    (retry,) = core.dispatch_failed(d.request_id, replica_down=False)
    assert isinstance(retry, Dispatch) and retry.replica_id != d.replica_id


def test_a_pin_to_a_replica_down_or_gone_is_refused_with_a_503() -> None:
    core, _ = make_core(replicas=2)
    core.replica_stats(ReplicaStats("r1", healthy=False))
    (down,) = core.request_arrived(pinned(call("s"), "r1"))
    assert isinstance(down, Reject) and down.status == 503 and "down" in down.reason
    (gone,) = core.request_arrived(pinned(call("s"), "r9"))
    assert isinstance(gone, Reject) and gone.status == 503 and "no longer served" in gone.reason
    assert not core.in_flight


def test_every_policy_keeps_the_pin() -> None:
    for policy in ("round-robin", "least-request", "cache-aware", "prefix-load", "session-affinity"):
        clock = Clock()
        core = SchedulerCore(["r0", "r1", "r2"], build_policy(policy, seed=0), clock)
        for i in range(6):
            d = only_dispatch(core.request_arrived(pinned(call(f"s{i}"), "r2")))
            assert d.replica_id == "r2", policy


def test_a_pinned_call_goes_to_its_replica_while_an_operator_drains_it() -> None:
    core, _ = make_core(replicas=2)
    core.draining.add("r1")  # as the admin API's drain does: marked draining, and unhealthy for new work
    core.replica_stats(ReplicaStats("r1", healthy=False))
    assert only_dispatch(core.request_arrived(pinned(call("s"), "r1"))).replica_id == "r1"
    assert only_dispatch(core.request_arrived(call("new"))).replica_id == "r0"
    core.remove_replica("r1")  # removed: the pin cannot be kept
    (gone,) = core.request_arrived(pinned(call("s"), "r1"))
    assert isinstance(gone, Reject) and gone.status == 503 and not core.draining


def test_a_pinned_call_is_not_held_in_the_release_queue() -> None:
    """Its lane may never release (a draining replica is unhealthy) and it has nowhere else to go."""
    queue = ReleaseQueueSpec(gate=PluginSpec("max-in-flight-gate", params={"max_in_flight": 1}))
    spec = msgspec.structs.replace(PRESETS["session-affinity"], queue=queue)
    core = SchedulerCore(["r0", "r1"], build_policy(spec, seed=0), Clock())
    only_dispatch(core.request_arrived(call("a")))
    only_dispatch(core.request_arrived(call("b")))
    assert core.request_arrived(call("c")) == []  # both replicas at the gate's limit: held
    d = only_dispatch(core.request_arrived(pinned(call("d"), "r1")))
    assert d.replica_id == "r1"
    core.draining.add("r0")
    core.replica_stats(ReplicaStats("r0", healthy=False))
    assert only_dispatch(core.request_arrived(pinned(call("e"), "r0"))).replica_id == "r0"


def test_a_pinned_call_of_an_unknown_session_is_admitted_while_new_workflows_wait() -> None:
    """A continuation of a response the proxy looked up (it restarted) joins its replica while other
    workflows wait for room (it raised in the fair queue's `serve_now`, which needs an empty queue)."""
    core, _ = make_core(replicas=1)
    assert core.admission is not None
    footprint = core.admission.footprint_of_new(call("x", 30_000))
    fits = int(CAPACITY * core.admission.spec.overcommit) // footprint
    for i in range(fits):
        only_dispatch(core.request_arrived(call(f"m{i}", prompt_tokens=30_000)))
    assert core.request_arrived(call("newcomer", prompt_tokens=30_000)) == []  # waits for room
    d = only_dispatch(core.request_arrived(pinned(call("forgotten"), "r0")))
    assert d.replica_id == "r0" and core.admission.is_admitted("forgotten")
    assert core.admission.is_waiting("newcomer")


def test_a_new_call_refused_for_want_of_a_replica_says_whether_an_operator_drains_them() -> None:
    """Found by an operator's review: with every replica drained (their checks passing), calls were refused
    as "no healthy replica", which blames their health."""
    for policy in ("saga", "round-robin"):
        core = SchedulerCore(["r0", "r1"], build_policy(policy, seed=0), Clock())
        reasons = []
        for drained in (("r0",), ("r0", "r1")):
            for r in ("r0", "r1"):
                core.replica_stats(ReplicaStats(r, healthy=False, kv_capacity_tokens=CAPACITY))
            core.draining.update(drained)
            (refused,) = core.request_arrived(call(f"new-{len(drained)}"))
            assert isinstance(refused, Reject) and refused.status == 503, policy
            reasons.append(refused.reason)
        assert reasons == [
            "no replica takes new calls: 1 being drained, the others down",
            "no replica takes new calls: every one is being drained",
        ], policy
        core.draining.clear()
        (refused,) = core.request_arrived(call("new-0"))
        assert isinstance(refused, Reject) and refused.reason == "no healthy replica"
