"""The bench's reference policies (end-oracle, Bélády with noisy gaps) and its gap-information statistic."""

from __future__ import annotations

import math
import random

import pytest

from loadtests.bench.predictor import (
    BeladyPolicy,
    LruPolicy,
    StateOraclePolicy,
    TraceCall,
    _events,
    build_trace,
    replay,
)
from loadtests.bench.predictor_references import EndOraclePolicy, NoisyBeladyPolicy, gap_information
from loadtests.workloads.catalog import generate


def _call(sid: str, k: int, arrival: float, finish: float, size: int, nxt: float) -> TraceCall:
    return TraceCall(
        sid,
        "t",
        k,
        math.isinf(nxt),
        arrival,
        finish,
        size,
        size if k else 0,
        0,
        "tool_calls",
        ("x",),
        (),
        nxt,
    )


def _random_trace(seed: int, sessions: int = 12, calls: int = 6) -> list[list[TraceCall]]:
    """Equal-size prefixes (10 tokens), log-normal gaps: where Bélády is optimal."""
    rng = random.Random(seed)
    out = []
    for s in range(sessions):
        t, row = rng.uniform(0, 5), []
        for k in range(calls):
            finish = t + 0.1
            nxt = finish + rng.lognormvariate(0.0, 1.0) if k < calls - 1 else math.inf
            row.append(_call(f"s{s}", k, t, finish, 10, nxt))
            t = nxt
        out.append(row)
    return out


def test_the_end_oracle_drops_the_session_that_will_not_return() -> None:
    # One entry fits. x waits (back at 2.0); `done` answers last at 1.5 in the same state. The state's
    # gaps cannot tell them apart; knowing that `done` ends, the end-oracle keeps x, as Bélády does.
    trace = [
        [_call("x", 0, 0.0, 1.0, 10, 2.0), _call("x", 1, 2.0, 2.5, 10, math.inf)],
        [_call("done", 0, 0.5, 1.5, 10, math.inf)],
    ]
    events = _events(trace)
    assert replay(events, BeladyPolicy("b", 10)).avoidable == 0
    assert replay(events, EndOraclePolicy(10, trace)).avoidable == 0
    assert replay(events, LruPolicy("lru", 10)).avoidable == 10  # the most recent (done) stays


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_noisy_belady_is_belady_without_noise_and_never_better_with_it(seed: int) -> None:
    trace = _random_trace(seed)
    events = _events(trace)
    best = replay(events, BeladyPolicy("b", 40)).avoidable
    assert replay(events, NoisyBeladyPolicy(40, 0.0)).avoidable == best
    noisy = [replay(events, NoisyBeladyPolicy(40, sigma, seed=seed)).avoidable for sigma in (0.5, 3.0)]
    assert all(n >= best for n in noisy)  # equal sizes: Bélády is optimal
    assert noisy[1] > best  # gaps known to a factor of e^3 mislead it
    # The end-oracle knows less than Bélády and ranks no better than it on equal sizes.
    assert replay(events, EndOraclePolicy(40, trace)).avoidable >= best
    assert replay(events, StateOraclePolicy(40, trace)).avoidable >= best


def test_gap_information_sees_a_per_session_scale_and_none_in_the_generated_workloads() -> None:
    rng = random.Random(0)
    trace = []
    for s in range(40):
        scale = 10 ** rng.uniform(-1, 1)  # each session its own speed: its gaps predict each other
        t, row = 0.0, []
        for k in range(8):
            nxt = t + 0.1 + scale * rng.uniform(0.8, 1.2) if k < 7 else math.inf
            row.append(_call(f"s{s}", k, t, t + 0.1, 10, nxt))
            t = nxt
        trace.append(row)
    info = gap_information(trace)
    assert info["gaps"] == 40 * 6
    assert info["spearman_previous_gap"] > 0.8
    # webarena draws each browser action's latency independently: nothing per session to learn.
    web = build_trace(generate("webarena", 200, seed=0), concurrency=64, seed=0)
    got = gap_information(web)
    assert got["gaps"] > 2000
    for key in ("spearman_previous_gap", "spearman_context_tokens", "spearman_calls_so_far"):
        assert abs(got[key]) < 0.1
