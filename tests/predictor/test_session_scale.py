"""The per-session gap scale: learned only when a session's gaps predict its next ones; what it changes."""

from __future__ import annotations

import math
import random

from predictor import PredictedRetention, Predictor, RetentionParams
from predictor.return_model import ReturnModel
from predictor.session_scale import SessionGapScale
from predictor.sketch import seconds_sketch


def _model(median: float = 1.0) -> ReturnModel:
    rng = random.Random(5)
    sketch = seconds_sketch()
    for _ in range(2000):
        sketch.add(median * math.exp(rng.gauss(0.0, 0.9)))
    return ReturnModel(sketch, 0.0)


def _feed(scale: SessionGapScale, speeds: list[float], gaps: int, rng: random.Random) -> None:
    """Sessions s0.. waiting in one state (median 1 s) and coming back after speed x log-normal noise."""
    model, now = _model(), 0.0
    for k in range(gaps):
        for i, speed in enumerate(speeds):
            now += 0.01
            scale.waiting(f"s{i}", "agent", model, now)
            scale.returned(f"s{i}", now + speed * math.exp(rng.gauss(0.0, 0.9)))
        if k == 0:
            assert scale.scale("s0") == scale.scale("s1")  # one gap each: no pair seen yet


def test_a_consistently_slow_session_gets_a_scale_above_one_once_the_stream_shows_it() -> None:
    rng = random.Random(1)
    scale = SessionGapScale(None)
    speeds = [10 ** rng.uniform(-1, 1) for _ in range(60)]
    _feed(scale, speeds, 12, rng)
    w = scale.weight("agent")
    assert 0 < w < 5  # speeds spread over two decades against noise of sigma 0.9
    slow, fast = max(range(60), key=lambda i: speeds[i]), min(range(60), key=lambda i: speeds[i])
    assert scale.scale(f"s{slow}") > 2.0
    assert scale.scale(f"s{fast}") < 0.5
    assert scale.weight("another agent") == math.inf  # nothing seen of it


def test_independent_gaps_leave_every_scale_at_one() -> None:
    rng = random.Random(2)
    scale = SessionGapScale(None)
    _feed(scale, [1.0] * 60, 12, rng)
    assert scale.weight("agent") == math.inf
    assert all(scale.scale(f"s{i}") == 1.0 for i in range(60))


def test_a_fixed_weight_shrinks_and_zero_turns_it_off() -> None:
    model = _model()
    fixed = SessionGapScale(1.0)
    fixed.waiting("s", "a", model, 0.0)
    fixed.returned("s", math.e**2 * model.quantile(0.5))  # log ratio 2
    assert math.isclose(fixed.scale("s"), math.exp(2 / 2))  # one gap and one pseudo-gap
    off = SessionGapScale(0.0)
    off.waiting("s", "a", model, 0.0)
    off.returned("s", 100.0)
    assert off.scale("s") == 1.0 and not off.enabled


def test_memory_is_bounded() -> None:
    model = _model()
    scale = SessionGapScale(None, max_sessions=50, max_groups=4)
    for i in range(1000):
        for k in range(3):
            scale.waiting(f"s{i}", f"type{i % 13}", model, float(k))
            scale.returned(f"s{i}", k + 0.5)
    assert len(scale._sessions) <= 50
    assert len(scale._pairs) <= 4


def test_retention_gives_up_the_slow_session_first_when_the_scale_is_on() -> None:
    def call(predictor: Predictor, policy: PredictedRetention, sid: str, t: float) -> tuple[str, ...]:
        predictor.call_arrived(sid, "toy", t, 1000)
        policy.on_arrival(sid, t)
        predictor.call_finished(sid, t + 0.1, 1000, 10, "tool_calls", ("bash",))
        return policy.after_call(sid, t + 0.1, 10_000).evicted

    def evicted(weight: float) -> tuple[str, ...]:
        predictor = Predictor()
        policy = PredictedRetention(predictor, 20_000, RetentionParams(session_scale_weight=weight))
        now = 0.0
        # One state, two sessions: "fast" always comes back 0.5 s after its answer, "slow" after 10 s.
        for sid, gap in (("fast", 0.5), ("slow", 10.0)):
            for _ in range(30):
                call(predictor, policy, sid, now)
                now += 0.1 + gap
        # Both waiting again, "slow" answered a moment before "fast"; a third session needs room.
        call(predictor, policy, "slow", now)
        call(predictor, policy, "fast", now + 0.05)
        return call(predictor, policy, "third", now + 0.3)

    # Without the scale all three are ranked on the state's gaps (half short, half long) and their
    # silences alone, and the slow session, the longest silent, keeps its place (the fresh newcomer goes).
    # With it, the slow session's own history says its next use is furthest: it goes.
    assert evicted(0.0) == ("third",)
    assert evicted(1.0) == ("slow",)
