"""Sessions whose id the shell inferred and that made one call are forgotten after the short
`single_call_session_ttl_s`; every other session keeps the full idle TTL."""

from __future__ import annotations

from proxy.config import ProxyConfig
from proxy.scheduler import ConfigError, RequestInfo, SchedulerCore, build_policy
from tests.clocks import Clock


def _call(
    core: SchedulerCore, clock: Clock, rid: str, sid: str, *, inferred: bool, finish: bool = True
) -> None:
    req = RequestInfo(request_id=rid, session_id=sid, arrived_at=clock.now, session_inferred=inferred)
    core.request_arrived(req)
    if finish:
        core.request_finished(rid)


def _core(clock: Clock) -> SchedulerCore:
    return SchedulerCore(
        ["r0", "r1"],
        build_policy("session-affinity"),
        clock,
        session_idle_ttl_s=1000.0,
        single_call_session_ttl_s=60.0,
    )


def test_one_shot_inferred_sessions_go_after_the_short_ttl_and_the_others_stay() -> None:
    clock = Clock()
    core = _core(clock)
    _call(core, clock, "a", "one-shot", inferred=True)
    _call(core, clock, "b", "explicit", inferred=False)
    _call(core, clock, "c", "talks", inferred=True)
    _call(core, clock, "d", "busy", inferred=True, finish=False)  # its one call never ends
    clock.now += 30.0
    _call(core, clock, "e", "talks", inferred=True)  # a second call: the full TTL from now on
    clock.now += 40.0  # t=70: past the short TTL for everything seen at 0
    core.tick()
    assert set(core.sessions) == {"explicit", "talks", "busy"}
    assert "one-shot" not in core.policy.scorers[0][0].bound  # type: ignore[attr-defined]
    assert "one-shot" not in core.predictor.sessions
    clock.now += 2000.0  # past the full TTL too: only the one with a call in flight stays
    core.tick()
    assert set(core.sessions) == {"busy"}


def test_the_short_ttl_counts_from_the_call_finishing_not_arriving() -> None:
    clock = Clock()
    core = _core(clock)
    _call(core, clock, "a", "slow", inferred=True, finish=False)
    _call(core, clock, "b", "quick", inferred=True)
    clock.now += 50.0
    core.request_finished("a")  # "slow" last seen at 50, "quick" at 0
    clock.now += 20.0  # t=70
    core.tick()
    assert set(core.sessions) == {"slow"}
    clock.now += 50.0  # t=120: 70 s after its call finished
    core.tick()
    assert len(core.sessions) == 0


def test_the_config_key_must_be_positive() -> None:
    config = ProxyConfig(replicas=["http://a"], single_call_session_ttl_s=0.0)
    try:
        config.validate()
    except ConfigError as e:
        assert "single_call_session_ttl_s" in str(e)
    else:
        raise AssertionError("a zero single_call_session_ttl_s was accepted")
