"""The retention index (returns per second held), the hierarchical end probability, and the memoised answers
of sketches and return models (they must follow every change of the counts)."""

from __future__ import annotations

import random

import pytest

from predictor import PredictedRetention, Predictor, RetentionParams
from predictor.return_model import ReturnModel
from predictor.sketch import seconds_sketch, tokens_sketch

RATIO = (7200.0 / 1e-3) ** (1 / 80)  # one bucket of seconds_sketch


def _two_point(p_end: float) -> ReturnModel:
    gaps = seconds_sketch()
    gaps.add(1.0)
    gaps.add(100.0)
    return ReturnModel(gaps, p_end)


def test_hit_rate_of_a_two_point_gap_solved_by_hand() -> None:
    model = _two_point(0.0)
    # From the answer: hold ~1 s, half the sessions are back (the other half held ~1 s too): 0.5 per second.
    assert 0.5 / RATIO < model.hit_rate(0.0) < 0.5 * RATIO
    # Silent for 2 s: the short gaps are over, the rest come back ~100 s later: ~1/98 per second.
    assert 1 / (98 * RATIO) < model.hit_rate(2.0) < RATIO / 98
    # Silent for 50 s: ~1/50 per second, more than at 2 s (the long gap is nearer), and 0 past every gap.
    assert 1 / (50 * RATIO**2) < model.hit_rate(50.0) < RATIO**2 / 50
    assert model.hit_rate(50.0) > model.hit_rate(2.0)
    assert model.hit_rate(500.0) == 0.0


def test_hit_rate_counts_sessions_that_never_return_as_held_for_nothing() -> None:
    sure, half = _two_point(0.0), _two_point(0.5)
    # Half never return: half the returns, and the holding they waste: a little under half the rate.
    assert 0.4 * sure.hit_rate(0.0) < half.hit_rate(0.0) < 0.5 * sure.hit_rate(0.0)
    assert _two_point(1.0).hit_rate(0.0) == 0.0


def test_index_ranking_gives_up_a_silent_fast_state_before_a_fresh_slow_one() -> None:
    predictor = Predictor()
    rng = random.Random(3)
    now = 0.0
    for i in range(200):  # "fast" returns in ~50 ms, "slow" in ~20 s
        for state, median in (("fast", 0.05), ("slow", 20.0)):
            sid = f"{state}-{i}"
            predictor.call_arrived(sid, "t", now, 1000)
            predictor.call_finished(sid, now + 0.1, 1000, 10, "tool_calls", (state,))
            back = now + 0.1 + median * rng.lognormvariate(0, 0.3)
            predictor.call_arrived(sid, "t", back, 1200)
            predictor.call_finished(sid, back + 0.1, 1200, 10, "tool_calls", (state,))
            predictor.forget(sid)
        now += 100.0
    policy = PredictedRetention(predictor, 100_000, RetentionParams())
    for sid, state in (("a", "fast"), ("b", "slow")):
        predictor.call_arrived(sid, "t", now, 1000)
        predictor.call_finished(sid, now, 1000, 10, "tool_calls", (state,))
        policy.after_call(sid, now, 1010)
    # Just after the answers the fast one is worth more; 5 s later it is almost surely not coming back soon.
    assert policy.eviction_score("a", now + 0.01) < policy.eviction_score("b", now + 0.01)
    assert policy.eviction_score("a", now + 5.0) > policy.eviction_score("b", now + 5.0)


def test_a_state_that_always_ends_is_not_pulled_back_to_the_prior() -> None:
    predictor = Predictor()
    now = 0.0
    for i in range(40):  # one call, a final answer, an explicit end: the answer state ends every session
        predictor.call_arrived(f"s{i}", "t", now, 1000)
        predictor.call_finished(f"s{i}", now + 1, 1000, 10, "stop")
        predictor.session_ended(f"s{i}")
        now += 2.0
    predictor.call_arrived("x", "t", now, 1000)
    predictor.call_finished("x", now + 1, 1000, 10, "stop")
    prediction = predictor.predict("x", now + 1)
    assert prediction is not None
    # 40 ends and no return: with the prior's 1/30 over 2 pseudo-counts alone it would be ~0.046.
    assert prediction.p_return < 0.01


def test_sketch_memos_follow_every_change() -> None:
    sketch = tokens_sketch()
    sketch.add(100.0)
    first_mean, first_residual = sketch.mean(), sketch.residual_mean(10.0)
    sketch.add(10_000.0)
    assert sketch.mean() > 10 * first_mean
    assert sketch.residual_mean(10.0) > 10 * first_residual
    sketch.remove(10_000.0)
    assert sketch.mean() == pytest.approx(first_mean)
    other = tokens_sketch()
    other.add(100_000.0)
    other.mean()
    sketch.merge_into(other)
    assert other.mean() == pytest.approx((100_000 * 1.0 + first_mean) / 2, rel=0.2)
    before = other.residual_mean(1.0)
    other.scale(0.5)  # halving every count leaves the shape (and the means) unchanged
    assert other.residual_mean(1.0) == pytest.approx(before)
    assert other.total == pytest.approx(1.0)


def test_memoised_quantiles_equal_fresh_ones() -> None:
    rng = random.Random(5)
    gaps = seconds_sketch()
    for _ in range(500):
        gaps.add(rng.lognormvariate(0, 1.5))
    model = ReturnModel(gaps, 0.1)
    fresh = ReturnModel(gaps, 0.1)
    for q in (0.1, 0.5, 0.9, 0.99):
        model.quantile(q)
    for q in (0.1, 0.5, 0.9, 0.99):
        assert model.quantile(q) == fresh.quantile(q) == model.conditional_quantile(q, 0.0)
    assert model.conditional_quantile(0.5, 3.0) == fresh.conditional_quantile(0.5, 3.0) > 3.0


def test_running_sums_equal_a_fresh_merge_through_decay() -> None:
    from predictor.graph import START, AgentGraph
    from predictor.structs import GraphLimits

    graph = AgentGraph("t", GraphLimits(decay_weight=40.0))  # halves often
    rng = random.Random(9)
    states = ["a#1", "a#2", "b#1", "c#2"]
    src = START
    for _ in range(3000):
        dst = rng.choice(states)
        graph.observe_transition(
            src, dst, gap_s=rng.lognormvariate(0, 2), growth=rng.uniform(0, 5000), output=rng.uniform(1, 900)
        )
        src = START if rng.random() < 0.05 else dst
    for which in ("gap", "growth", "output"):
        for key in states:
            fresh = graph._merge([key], which)
            running = graph.merged([key], which)
            assert fresh is not None and running is not None
            assert running.total == pytest.approx(fresh.total)
            assert running.quantile(0.5) == pytest.approx(fresh.quantile(0.5), rel=1e-6)
            assert running.mean() == pytest.approx(fresh.mean(), rel=1e-6)
        state_fresh = graph._merge(graph.keys_with_state("a"), which)
        state_running = graph.state_merged("a", which)
        assert state_fresh is not None and state_running is not None
        assert state_running.total == pytest.approx(state_fresh.total)
        assert state_running.quantile(0.9) == pytest.approx(state_fresh.quantile(0.9), rel=1e-6)
        all_fresh = graph._merge([k for k in graph.nodes if k != START], which)
        all_running = graph.graph_merged(which)
        assert all_fresh is not None and all_running is not None
        assert all_running.total == pytest.approx(all_fresh.total)
        assert all_running.quantile(0.1) == pytest.approx(all_fresh.quantile(0.1), rel=1e-6)
    assert graph.state_merged("never", "gap") is None


def _answer(predictor: Predictor, sid: str, at: float) -> None:
    predictor.call_arrived(sid, "t", at - 0.5, 1000)
    predictor.call_finished(sid, at, 1000, 10, "tool_calls", ("bash",))


def _warm(predictor: Predictor) -> None:
    for i in range(50):  # a learned state: gaps of ~1 s, so its horizon is the 30 s minimum
        _answer(predictor, f"warm{i}", 1.0)
        _answer(predictor, f"warm{i}", 2.0)
        predictor.forget(f"warm{i}")


def test_tick_looks_only_at_sessions_silent_long_enough_and_ends_the_same_ones() -> None:
    predictor = Predictor()
    _warm(predictor)
    _answer(predictor, "old", 10.0)
    _answer(predictor, "busy", 11.0)
    predictor.call_arrived("busy", "t", 60.0, 1200)  # in flight: never ended by silence
    _answer(predictor, "young", 90.0)
    predictor.forget("young")  # gone: its entry must not keep anything alive
    _answer(predictor, "fresh", 95.0)
    assert predictor.tick(100.0) == ["old"]
    assert "old" not in predictor.sessions and "busy" in predictor.sessions and "fresh" in predictor.sessions
    assert all("young" not in group for group in predictor._groups.values())
    assert predictor.tick(200.0) == ["fresh"]


@pytest.mark.parametrize("clock_went_back", [False, True])
def test_a_tick_in_steps_ends_what_one_tick_ends_but_a_session_with_a_call_since(
    clock_went_back: bool,
) -> None:
    """The proxy ends a tick's sessions a few hundred a turn of its loop (a flood going quiet ended thousands
    a tick in one go): the steps end the sessions one tick ends, in the same order, except one with a call in
    flight by its step (it was not over). Both scans: by groups, and of every session once the clock went
    back (the warm-up answers at 2 s, then at 1 s)."""
    whole, stepped = Predictor(), Predictor()
    for predictor in (whole, stepped):
        if clock_went_back:
            _warm(predictor)
        for i in range(40):
            _answer(predictor, f"s{i}", 10.0 + i * 0.01)
        assert predictor._answered_ordered is not clock_went_back
    at = 100.0 if clock_went_back else 100_000.0  # past the horizon: the warm-up's 30 s, or the priors'
    assert whole.tick(at) == [f"s{i}" for i in range(40)]
    assert not whole.ending()
    done = stepped.tick(at, end_limit=16)
    assert done == [f"s{i}" for i in range(16)] and stepped.ending()
    stepped.call_arrived("s20", "t", at + 0.5, 1200)  # back before its step: in flight
    while stepped.ending():
        done += stepped.end_more(16)
    assert done == [f"s{i}" for i in range(40) if i != 20]
    assert list(stepped.sessions) == ["s20"] and len(whole.sessions) == 0


def test_tick_with_a_clock_that_went_back_still_ends_every_silent_session() -> None:
    predictor = Predictor()
    _warm(predictor)
    _answer(predictor, "late", 100.0)
    _answer(predictor, "early", 10.0)  # stamped before the previous answer: the order by time is lost
    assert predictor.tick(110.0) == ["early"]  # "late" (silent 10 s) must not hide it
    assert predictor.tick(200.0) == ["late"]
