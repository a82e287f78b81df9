"""Remaining work and peak context: learned from the lengths of the sessions that ended (mean residual
life), checked on streams whose lengths and growth are known."""

from __future__ import annotations

import math
import random

import pytest

from predictor import Predictor, PredictorConfig
from predictor.return_model import ReturnModel
from predictor.sketch import seconds_sketch

GROWTH = 500


def feed_fixed_lengths(predictor: Predictor, lengths: list[int], *, first_prompt: int = 2000) -> float:
    """Sessions of the given lengths, one after another, each call growing the prompt by GROWTH tokens,
    every call a tool call (nothing in the stream says when a task is about to end); explicit ends."""
    now = 0.0
    for i, n in enumerate(lengths):
        sid, prompt = f"s{i}", first_prompt
        for _ in range(n):
            predictor.call_arrived(sid, "fixed", now, prompt)
            now += 1.0
            predictor.call_finished(sid, now, prompt, 100, "tool_calls", ("bash",))
            now += 0.5
            prompt += GROWTH
        predictor.session_ended(sid)
    return now


def _live(predictor: Predictor, now: float, calls: int, first_prompt: int = 2000) -> str:
    prompt = first_prompt
    for _ in range(calls):
        predictor.call_arrived("live", "fixed", now, prompt)
        now += 1.0
        predictor.call_finished("live", now, prompt, 100, "tool_calls", ("bash",))
        prompt += GROWTH
    return "live"


@pytest.mark.parametrize(("done", "expected"), [(5, 15.0), (20, 10.0), (3, 17.0)])
def test_remaining_calls_follow_the_residual_life_of_the_lengths_seen(done: int, expected: float) -> None:
    # Half the tasks make 10 calls, half 30: after 5 calls 15 remain on average, after 20 exactly 10.
    rng = random.Random(1)
    predictor = Predictor()
    now = feed_fixed_lengths(predictor, [rng.choice((10, 30)) for _ in range(300)])
    _live(predictor, now, done)
    pred = predictor.predict("live", now + done + 0.1)
    assert pred is not None
    # One sketch bucket (a factor 1.19) of resolution on the lengths.
    assert pred.remaining_calls == pytest.approx(expected * pred.p_return, rel=0.12)
    # The chain over the graph cannot tell 20 calls done from 5 (one bucket of states) as the lengths can.
    chain = Predictor(PredictorConfig(remaining_model="chain"))
    feed_fixed_lengths(chain, [rng.choice((10, 30)) for _ in range(300)])
    _live(chain, now, done)
    chained = chain.predict("live", now + done + 0.1)
    assert chained is not None
    if done == 20:
        assert abs(chained.remaining_calls - expected) > abs(pred.remaining_calls - expected)


def test_peak_context_is_the_last_prompt_plus_the_growth_still_to_come() -> None:
    predictor = Predictor()
    now = feed_fixed_lengths(predictor, [20] * 200)
    _live(predictor, now, 5)
    pred = predictor.predict("live", now + 5.1)
    assert pred is not None
    final_prompt = 2000 + 19 * GROWTH  # the 20th call's prompt
    assert pred.peak_prompt_tokens == pytest.approx(final_prompt, rel=0.1)
    assert predictor.peak_context_tokens("live") == pytest.approx(pred.peak_prompt_tokens)
    # With the sixth call in flight the peak is still the 20th call's prompt.
    predictor.call_arrived("live", "fixed", now + 6, 2000 + 5 * GROWTH)
    assert predictor.predict("live", now + 6) is None
    assert predictor.peak_context_tokens("live") == pytest.approx(final_prompt, rel=0.1)
    assert predictor.peak_context_tokens("nobody") is None


def test_cold_start_peak_uses_the_prior_remaining_calls() -> None:
    predictor = Predictor()
    predictor.call_arrived("x", "new", 0.0, 1000)
    predictor.call_finished("x", 1.0, 1000, 50, "tool_calls", ("bash",))
    pred = predictor.predict("x", 1.0)
    assert pred is not None and pred.cold
    priors = predictor.config.priors
    assert pred.remaining_calls == priors.remaining_calls
    assert pred.peak_prompt_tokens == pytest.approx(1000 + priors.remaining_calls * priors.growth_tokens)


def test_an_end_taken_back_leaves_the_lengths_as_they_were() -> None:
    predictor = Predictor(PredictorConfig(min_horizon_s=30.0))
    predictor.call_arrived("a", "t", 0.0, 100)
    predictor.call_finished("a", 1.0, 100, 10, "tool_calls", ("bash",))
    assert predictor.tick(5000.0) == ["a"]  # silent far past its horizon: declared over
    graph = predictor.graph("t")
    assert graph is not None and graph.lengths.total == 1 and graph.peaks.total == 1
    predictor.call_arrived("a", "t", 5001.0, 200)  # it was not over
    assert graph.lengths.total == 0 and graph.peaks.total == 0 and graph.sessions_ended == 0


def test_conditional_mean_of_the_gap_matches_samples() -> None:
    rng = random.Random(3)
    sketch = seconds_sketch()
    samples = [rng.lognormvariate(0.0, 1.0) for _ in range(20_000)]
    for x in samples:
        sketch.add(x)
    model = ReturnModel(sketch, 0.0)
    for waited in (0.0, 1.0, 3.0):
        above = [x for x in samples if x > waited]
        assert model.conditional_mean(waited) == pytest.approx(sum(above) / len(above), rel=0.05)
    assert model.conditional_mean(1e9) == 1e9
    assert math.isfinite(model.conditional_mean(0.5))


def test_bad_remaining_model_fails_naming_the_key() -> None:
    with pytest.raises(ValueError, match="remaining_model"):
        Predictor(PredictorConfig(remaining_model="guess"))


def test_growth_is_learned_from_like_counts_when_the_arrival_estimate_is_off() -> None:
    """At arrival the prompt is the proxy's estimate (bytes / 4), at the end the engine's count: learning
    growth as the one less the other learned the estimate's error over the whole context as growth, every
    call (the fifth review: 1,540 tokens a call where the engine saw 14; reservations twice the KV)."""
    predictor = Predictor()
    now = 0.0
    for task in range(200):
        sid = f"t{task}"
        for k in range(10):
            engine = 1000 + 14 * k
            predictor.call_arrived(sid, "coder", now, prompt_tokens=2 * engine)  # the estimate: twice over
            now += 1.0
            reason = "stop" if k == 9 else "tool_calls"
            predictor.call_finished(sid, now, engine, 20, reason, () if k == 9 else ("bash",))
            now += 1.0
        predictor.session_ended(sid)
    for k in range(5):
        predictor.call_arrived("live", "coder", now, prompt_tokens=2 * (1000 + 14 * k))
        now += 1.0
        predictor.call_finished("live", now, 1000 + 14 * k, 20, "tool_calls", ("bash",))
    pred = predictor.predict("live", now + 0.5)
    assert pred is not None
    peak = pred.peak_prompt_tokens
    assert peak == pytest.approx(1000 + 14 * 9, rel=0.05), peak
