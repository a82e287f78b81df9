"""`predicted-ttl-retention` in the scheduler core: TTLs sized from the graph the core learns."""

from __future__ import annotations

import pytest

from proxy.scheduler import ConfigError, Dispatch, PolicySpec, RequestInfo, SchedulerCore, Usage, build_policy
from proxy.scheduler.registry import PluginSpec
from tests.clocks import Clock
from tests.predictor.streams import feed_sessions


def _call(core: SchedulerCore, clock: Clock, sid: str, usage: Usage) -> Dispatch:
    req = RequestInfo(request_id=f"{sid}-{clock.now}", session_id=sid, arrived_at=clock.now, agent_type="toy")
    (decision,) = core.request_arrived(req)
    assert isinstance(decision, Dispatch)
    clock.now += 1.0
    core.request_finished(req.request_id, usage)
    return decision


def _learned_core(params: dict[str, object] | None = None) -> tuple[SchedulerCore, Clock]:
    clock = Clock()
    spec = PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("session-affinity-scorer", 1.0)],
        retention=PluginSpec("predicted-ttl-retention", params=params or {}),
    )
    core = SchedulerCore(["r0"], build_policy(spec), clock)
    return core, clock


def test_ttl_is_none_when_cold_and_follows_the_graph_once_learned() -> None:
    clock = Clock()
    core = SchedulerCore(["r0"], build_policy("predicted-ttl"), clock)
    cold = _call(core, clock, "a", Usage(1000, 10, 0, "tool_calls", ("read",)))
    assert cold.retain_ttl_s is None and cold.retain_priority is None
    clock.now = feed_sessions(core.predictor, 300)
    # The session's last answer called `read`; this call will leave it after `edit` (always), whose gaps
    # have a median of 2 s (sigma 0.5): the p95 is ~4.5 s.
    _call(core, clock, "b", Usage(1000, 10, 0, "tool_calls", ("read",)))
    warm = _call(core, clock, "b", Usage(1300, 10, 0, "tool_calls", ("edit",)))
    assert warm.retain_ttl_s is not None and 3.0 < warm.retain_ttl_s < 7.0
    # After `edit`, the next call goes to `search` (60%, 0.5 s) or answers the person (40%, minutes): the
    # person's think time is not held for, so the TTL covers the search branch only.
    after_edit = _call(core, clock, "b", Usage(1600, 10, 0, "tool_calls", ("search",)))
    assert after_edit.retain_ttl_s is not None and 0.5 < after_edit.retain_ttl_s < 3.0
    # Ranked below every call (priority 0) and by predicted next use: 2 s away goes before ~0.8 s away.
    assert warm.retain_priority is not None and after_edit.retain_priority is not None
    assert warm.retain_priority > after_edit.retain_priority >= 1


def test_holding_through_think_time_and_hard_holds_when_asked() -> None:
    core, clock = _learned_core({"long_gap_s": None, "priority_base_s": None})
    clock.now = feed_sessions(core.predictor, 300)
    _call(core, clock, "b", Usage(1000, 10, 0, "tool_calls", ("read",)))
    _call(core, clock, "b", Usage(1300, 10, 0, "tool_calls", ("edit",)))
    after_edit = _call(core, clock, "b", Usage(1600, 10, 0, "tool_calls", ("search",)))
    assert after_edit.retain_ttl_s is not None and after_edit.retain_ttl_s > 60
    assert after_edit.retain_priority is None


def test_p_return_counts_only_the_branches_held_for() -> None:
    # A call in flight after `edit` goes on to `search` (0.5 s) or the person (minutes): with a bound below
    # both, no branch is held for and the session does not come back within the hold.
    core, clock = _learned_core()
    clock.now = feed_sessions(core.predictor, 300)
    predictor = core.predictor
    model = predictor.return_model_after_call("missing")
    assert model is None
    _call(core, clock, "c", Usage(1000, 10, 0, "tool_calls", ("read",)))
    _call(core, clock, "c", Usage(1300, 10, 0, "tool_calls", ("edit",)))
    req = RequestInfo(request_id="c-x", session_id="c", arrived_at=clock.now, agent_type="toy")
    core.request_arrived(req)
    got = predictor.return_model_after_call("c", max_gap_s=0.1)  # even the 0.5 s search gap is too long
    assert got is not None and got[0].p_return() == 0.0


def test_one_priority_level_ranks_nothing_but_stays_below_calls() -> None:
    core, clock = _learned_core({"priority_levels": 1})
    clock.now = feed_sessions(core.predictor, 300)
    _call(core, clock, "b", Usage(1000, 10, 0, "tool_calls", ("read",)))
    warm = _call(core, clock, "b", Usage(1300, 10, 0, "tool_calls", ("edit",)))
    after_edit = _call(core, clock, "b", Usage(1600, 10, 0, "tool_calls", ("search",)))
    assert warm.retain_priority == after_edit.retain_priority == 1


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"ttl_quantile": 2.0}, "ttl_quantile"),
        ({"long_gap_s": -1.0}, "long_gap_s"),
        ({"priority_base_s": float("inf")}, "priority_base_s"),
        ({"priority_levels": 0}, "priority_levels"),
    ],
)
def test_bad_params_fail_naming_the_plugin(params: dict[str, object], key: str) -> None:
    spec = PolicySpec(
        picker=PluginSpec("max-score-picker"),
        retention=PluginSpec("predicted-ttl-retention", params=params),
    )
    with pytest.raises(ConfigError, match=f"predicted-ttl-retention.*{key}"):
        build_policy(spec)


def test_an_answer_to_the_person_releases_the_retention_at_once_a_tool_call_keeps_it() -> None:
    core, clock = _learned_core()
    clock.now = feed_sessions(core.predictor, 300)
    _call(core, clock, "b", Usage(1000, 10, 0, "tool_calls", ("read",)))
    kept = _call(core, clock, "b", Usage(1300, 10, 0, "tool_calls", ("edit",)))
    assert kept.retain_ttl_s is not None
    assert core.take_releases() == []  # after `edit` the agent calls a tool again within seconds
    # This call (after `edit`) was given a TTL for the `search` branch; it answers the person instead, and
    # the learned gap after an answer is minutes of think time: the retention goes now, not at its TTL.
    answered = _call(core, clock, "b", Usage(1600, 10, 0, "stop", ()))
    assert answered.retain_ttl_s is not None
    assert core.take_releases() == [("b", "r0")]
    assert core.take_releases() == []  # drained


def test_no_early_release_when_switched_off_or_when_nothing_was_retained() -> None:
    core, clock = _learned_core({"release_answer_gap_s": None})
    clock.now = feed_sessions(core.predictor, 300)
    _call(core, clock, "b", Usage(1000, 10, 0, "tool_calls", ("read",)))
    _call(core, clock, "b", Usage(1300, 10, 0, "tool_calls", ("edit",)))
    _call(core, clock, "b", Usage(1600, 10, 0, "stop", ()))
    assert core.take_releases() == []
    cold_core, cold_clock = _learned_core()  # nothing learned: no retention asked, so none to release
    cold = _call(cold_core, cold_clock, "c", Usage(1000, 10, 0, "stop", ()))
    assert cold.retain_ttl_s is None and cold_core.take_releases() == []
