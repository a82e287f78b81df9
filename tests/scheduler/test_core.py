"""The scheduler core on its own: no sockets, a hand-driven clock."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.scheduler import (
    ConfigError,
    Dispatch,
    PolicySpec,
    Reject,
    ReplicaStats,
    RequestInfo,
    SchedulerCore,
    build_policy,
)
from proxy.scheduler.registry import PluginSpec
from tests.clocks import Clock

REPLICAS = ["r0", "r1", "r2", "r3"]
_ids = itertools.count()


def make_core(policy: str, replicas: list[str] = REPLICAS, seed: int = 0) -> tuple[SchedulerCore, Clock]:
    clock = Clock()
    return SchedulerCore(replicas, build_policy(policy, seed=seed), clock), clock


def call(session: str) -> RequestInfo:
    return RequestInfo(request_id=f"q{next(_ids)}", session_id=session, arrived_at=0.0)


def dispatch(core: SchedulerCore, req: RequestInfo) -> str:
    (decision,) = core.request_arrived(req)
    assert isinstance(decision, Dispatch), decision
    return decision.replica_id


def run_session(core: SchedulerCore, session: str, calls: int) -> list[str]:
    """Sequential calls of one session, each finishing before the next (an agent's loop)."""
    placed = []
    for _ in range(calls):
        req = call(session)
        placed.append(dispatch(core, req))
        core.request_finished(req.request_id)
    return placed


def test_round_robin_scatters_a_session_over_every_replica() -> None:
    core, _ = make_core("round-robin")
    placed = run_session(core, "s", 8)
    assert Counter(placed) == dict.fromkeys(REPLICAS, 2)
    assert all(a != b for a, b in itertools.pairwise(placed))


def test_session_affinity_keeps_each_session_on_one_replica() -> None:
    core, _ = make_core("session-affinity")
    for s in ("a", "b", "c"):
        assert len(set(run_session(core, s, 10))) == 1


def test_session_affinity_spreads_concurrent_new_sessions_to_least_loaded() -> None:
    core, _ = make_core("session-affinity")
    first_calls = [call(f"s{i}") for i in range(4)]
    placed = [dispatch(core, r) for r in first_calls]  # all still in flight
    assert sorted(placed) == REPLICAS


def test_session_affinity_moves_off_an_unhealthy_replica_and_stays_moved() -> None:
    core, _ = make_core("session-affinity")
    home = run_session(core, "s", 1)[0]
    core.replica_stats(ReplicaStats(home, healthy=False))
    moved = run_session(core, "s", 1)[0]
    assert moved != home
    core.replica_stats(ReplicaStats(home, healthy=True))
    assert run_session(core, "s", 3) == [moved] * 3  # its prefix now lives on `moved`


def test_least_request_prefers_the_less_loaded_of_two() -> None:
    core, _ = make_core("least-request", replicas=["busy", "idle"])
    core.replica_stats(ReplicaStats("busy", waiting=5))
    placed = {run_session(core, f"s{i}", 1)[0] for i in range(20)}
    assert placed == {"idle"}


def test_least_request_balances_in_flight_calls() -> None:
    core, _ = make_core("least-request")
    placed = Counter(dispatch(core, call(f"s{i}")) for i in range(400))
    assert max(placed.values()) - min(placed.values()) <= 4


def test_a_replica_that_answered_an_error_stays_healthy_while_the_call_moves_on() -> None:
    core, _ = make_core("session-affinity", replicas=["r0", "r1"])
    req = call("s")
    first = dispatch(core, req)
    (retry,) = core.dispatch_failed(req.request_id, replica_down=False)
    assert isinstance(retry, Dispatch) and retry.replica_id != first
    assert all(r.healthy for r in core.replicas.values())
    (final,) = core.dispatch_failed(req.request_id, replica_down=False)  # never back to a replica it tried
    assert isinstance(final, Reject)


def test_failed_dispatch_retries_elsewhere_then_rejects() -> None:
    core, _ = make_core("session-affinity", replicas=["r0", "r1"])
    req = call("s")
    first = dispatch(core, req)
    (retry,) = core.dispatch_failed(req.request_id)
    assert isinstance(retry, Dispatch) and retry.replica_id != first
    (final,) = core.dispatch_failed(req.request_id)
    assert isinstance(final, Reject) and final.status == 503
    assert all(r.in_flight == 0 for r in core.replicas.values())
    assert not core.in_flight


def test_no_healthy_replica_rejects_with_503() -> None:
    core, _ = make_core("round-robin", replicas=["r0"])
    core.replica_stats(ReplicaStats("r0", healthy=False))
    (decision,) = core.request_arrived(call("s"))
    assert isinstance(decision, Reject) and decision.status == 503


def test_idle_sessions_are_forgotten_but_busy_ones_kept() -> None:
    core, clock = make_core("session-affinity", replicas=["r0", "r1"])
    run_session(core, "idle", 1)
    busy = call("busy")
    dispatch(core, busy)
    clock.now = 10_000.0
    core.tick()
    assert set(core.sessions) == {"busy"}
    affinity = core.policy.scorers[0][0]
    assert "idle" not in affinity.bound


def test_finish_of_unknown_request_is_ignored() -> None:
    core, _ = make_core("round-robin")
    assert core.request_finished("never-seen") == []
    assert all(r.in_flight == 0 for r in core.replicas.values())


def test_duplicate_request_id_is_refused() -> None:
    core, _ = make_core("round-robin")
    req = call("s")
    dispatch(core, req)
    with pytest.raises(ValueError, match="already in flight"):
        core.request_arrived(req)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("no-such-policy", "unknown policy 'no-such-policy'"),
        (PolicySpec(picker=PluginSpec("nope")), "unknown plugin type 'nope'"),
        (PolicySpec(picker=PluginSpec("least-request-scorer")), "is not a picker"),
        (PolicySpec(picker=PluginSpec("max-score-picker", params={"x": 1})), "bad params"),
        (
            PolicySpec(
                picker=PluginSpec("max-score-picker"), scorers=[PluginSpec("least-request-scorer", -1)]
            ),
            "weight must be >= 0",
        ),
    ],
)
def test_bad_configuration_fails_with_the_culprits_name(policy: str | PolicySpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_policy(policy)


def test_same_seed_same_placement() -> None:
    def placements(seed: int) -> list[str]:
        core, _ = make_core("least-request", seed=seed)
        return [dispatch(core, call(f"s{i}")) for i in range(50)]

    assert placements(7) == placements(7)


events = st.lists(
    st.tuples(st.sampled_from(["arrive", "finish", "fail", "down", "up", "tick"]), st.integers(0, 7)),
    max_size=80,
)


@settings(max_examples=150, deadline=None)
@given(policy=st.sampled_from(["round-robin", "least-request", "session-affinity"]), script=events)
def test_datastore_stays_consistent_under_any_event_order(policy: str, script: list[tuple[str, int]]) -> None:
    core, clock = make_core(policy)
    live: list[str] = []
    for kind, n in script:
        clock.now += 1.0
        if kind == "arrive":
            req = call(f"s{n % 3}")
            (decision,) = core.request_arrived(req)
            if isinstance(decision, Dispatch):
                live.append(req.request_id)
        elif kind in ("finish", "fail") and live:
            rid = live.pop(n % len(live))
            if kind == "finish":
                core.request_finished(rid)
            else:
                (decision,) = core.dispatch_failed(rid)
                if isinstance(decision, Dispatch):
                    live.append(rid)
        elif kind in ("down", "up"):
            core.replica_stats(ReplicaStats(REPLICAS[n % 4], healthy=kind == "up"))
        elif kind == "tick":
            core.tick()
        # Invariants: the datastore's counts equal what is really in flight.
        assert sorted(core.in_flight) == sorted(live)
        for replica in core.replicas.values():
            mine = sum(f.replica_id == replica.replica_id for f in core.in_flight.values())
            assert replica.in_flight == mine
        for sid, session in core.sessions.items():
            assert session.in_flight == sum(f.req.session_id == sid for f in core.in_flight.values())


def test_session_ended_forgets_the_session_and_tells_the_predictor() -> None:
    clock = Clock()
    core = SchedulerCore(["r0", "r1"], build_policy("session-affinity", seed=0), clock)
    core.request_arrived(RequestInfo("c1", "s1", arrived_at=0.0, prompt_tokens=100))
    core.request_finished("c1")
    assert "s1" in core.sessions and "s1" in core.predictor.sessions
    assert core.session_ended("s1") == []
    assert "s1" not in core.sessions and "s1" not in core.predictor.sessions
    assert core.session_ended("s1") == []  # unknown now: nothing to do
