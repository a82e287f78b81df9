"""The retention policy on a learned predictor: what it pins, for how long, and what it gives up first."""

from __future__ import annotations

import pytest

from predictor import PredictedRetention, Predictor, RetentionParams
from tests.predictor.streams import feed_sessions


def _trained() -> tuple[Predictor, float]:
    predictor = Predictor()
    return predictor, feed_sessions(predictor, 300)


def _finish(predictor: Predictor, sid: str, now: float, state: str, prompt: int = 10_000) -> None:
    predictor.call_arrived(sid, "toy", now - 1, prompt)
    reason, tools = ("stop", ()) if state == "answer" else ("tool_calls", (state,))
    predictor.call_finished(sid, now, prompt, 100, reason, tools)


def test_ttl_follows_the_predicted_gap_and_pressure_shrinks_it() -> None:
    predictor, now = _trained()
    params = RetentionParams(ttl_quantile=0.9, max_ttl_s=300, pressure_start=0.7)
    policy = PredictedRetention(predictor, 1_000_000, params)
    _finish(predictor, "edit", now, "edit")
    _finish(predictor, "read", now, "read")
    edit = policy.decide("edit", now, 10_100)
    read = policy.decide("read", now, 10_100)
    assert edit.keep and read.keep
    assert read.ttl_s < 1.0 < edit.ttl_s < 20.0  # edit's gaps: median 2 s; read's: 50 ms
    policy.after_call("edit", now, 10_100)
    full = PredictedRetention(predictor, 10_100, params)
    full.after_call("read", now, 10_100)  # the cache is now full: pressure 1
    assert full.pressure() == 1.0
    assert full.decide("edit", now, 10_100).ttl_s == pytest.approx(edit.ttl_s / 2)


def test_under_pressure_the_person_driven_wait_goes_before_the_tool_wait() -> None:
    predictor, now = _trained()
    policy = PredictedRetention(predictor, 20_000)
    _finish(predictor, "person", now, "answer")
    _finish(predictor, "tool", now, "edit")
    assert policy.after_call("person", now, 10_000).evicted == ()
    assert policy.after_call("tool", now, 10_000).evicted == ()
    _finish(predictor, "newcomer", now + 0.5, "search")
    decision = policy.after_call("newcomer", now + 0.5, 10_000)
    assert decision.evicted == ("person",)
    assert policy.on_arrival("tool", now + 2) == 10_000
    assert policy.on_arrival("person", now + 120) == 0


def test_next_use_by_mean_and_think_time_left_unpinned_when_asked() -> None:
    predictor, now = _trained()
    _finish(predictor, "person", now, "answer")
    _finish(predictor, "tool", now, "edit")
    by_mean = PredictedRetention(predictor, 100_000, RetentionParams(next_use="mean"))
    for sid in ("person", "tool"):
        by_mean.after_call(sid, now, 10_000)
    # The person's think time (median 2 min) is predicted further away than the edit's 2 s, by the mean too.
    assert by_mean.eviction_score("person", now) > 20 * by_mean.eviction_score("tool", now)
    bounded = PredictedRetention(predictor, 100_000, RetentionParams(long_gap_s=60.0))
    assert not bounded.decide("person", now, 10_000).keep
    assert bounded.decide("tool", now, 10_000).keep


def test_a_silent_session_loses_its_claim_as_time_passes() -> None:
    predictor, now = _trained()
    policy = PredictedRetention(predictor, 100_000)
    _finish(predictor, "s", now, "read")
    policy.after_call("s", now, 10_000)
    soon = policy.eviction_score("s", now + 0.01)
    late = policy.eviction_score("s", now + 20)  # read's gaps are ~50 ms: 20 s of silence says it is over
    assert late > 100 * soon


def test_bad_parameters_fail_naming_the_key() -> None:
    with pytest.raises(ValueError, match="ttl_quantile"):
        PredictedRetention(Predictor(), 10, RetentionParams(ttl_quantile=1.5))
    with pytest.raises(ValueError, match="next_use"):
        PredictedRetention(Predictor(), 10, RetentionParams(next_use="soon"))
