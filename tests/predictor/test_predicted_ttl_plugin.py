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


def test_ttl_is_none_when_cold_and_follows_the_graph_once_learned() -> None:
    clock = Clock()
    core = SchedulerCore(["r0"], build_policy("predicted-ttl"), clock)
    cold = _call(core, clock, "a", Usage(1000, 10, 0, "tool_calls", ("read",)))
    assert cold.retain_ttl_s is None
    clock.now = feed_sessions(core.predictor, 300)
    # The session's last answer called `read`; this call will leave it after `edit` (always), whose gaps
    # have a median of 2 s (sigma 0.5): the p95 is ~4.5 s.
    _call(core, clock, "b", Usage(1000, 10, 0, "tool_calls", ("read",)))
    warm = _call(core, clock, "b", Usage(1300, 10, 0, "tool_calls", ("edit",)))
    assert warm.retain_ttl_s is not None and 3.0 < warm.retain_ttl_s < 7.0
    # After `edit`, the next call goes to `search` (0.5 s) or answers the person (minutes), so the TTL
    # covers the person's think time up to the cap.
    after_edit = _call(core, clock, "b", Usage(1600, 10, 0, "tool_calls", ("search",)))
    assert after_edit.retain_ttl_s is not None and after_edit.retain_ttl_s > 60


def test_bad_params_fail_naming_the_plugin() -> None:
    spec = PolicySpec(
        picker=PluginSpec("max-score-picker"),
        retention=PluginSpec("predicted-ttl-retention", params={"ttl_quantile": 2.0}),
    )
    with pytest.raises(ConfigError, match="predicted-ttl-retention"):
        build_policy(spec)
