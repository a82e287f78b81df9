"""The retention ledger and the Bélády reference against small cases solved by hand."""

from __future__ import annotations

import math

import pytest

from loadtests.bench.predictor import (
    BeladyPolicy,
    FixedTtlPolicy,
    LruPolicy,
    TraceCall,
    _events,
    replay,
)
from predictor import RetentionLedger


def test_ledger_evicts_unpinned_first_then_the_largest_key() -> None:
    ledger = RetentionLedger(10)
    assert ledger.insert("a", 4, 0.0, 100.0, key=5.0) == []
    assert ledger.insert("b", 4, 0.0, 100.0, key=9.0) == []
    assert ledger.insert("c", 2, 0.0, 0.0, key=1.0) == []  # unpinned
    assert ledger.used == 10
    # Room for 2 more: the unpinned one goes first, whatever its key.
    assert ledger.insert("d", 2, 1.0, 100.0, key=0.5) == ["c"]
    # Room for 4: the pinned entry with the largest key goes (b), not a.
    assert ledger.insert("e", 4, 2.0, 100.0, key=7.0) == ["b"]
    assert ledger.used <= 10
    assert ledger.take("a") == 4 and ledger.take("a") == 0


def test_ledger_ttl_expiry_unpins() -> None:
    ledger = RetentionLedger(6)
    ledger.insert("old", 3, 0.0, 5.0, key=1.0)  # pinned until t=5
    ledger.insert("new", 3, 1.0, 100.0, key=50.0)
    # At t=10 `old` is only cached: it goes before `new` despite its smaller key.
    assert ledger.insert("x", 3, 10.0, 100.0, key=2.0) == ["old"]


def test_an_entry_too_large_for_the_cache_is_not_kept() -> None:
    ledger = RetentionLedger(5)
    assert ledger.insert("big", 9, 0.0, 10.0, key=1.0) == ["big"]
    assert ledger.used == 0


def _call(
    sid: str, k: int, arrival: float, finish: float, prompt: int, reusable: int, nxt: float
) -> TraceCall:
    return TraceCall(
        sid, "t", k, math.isinf(nxt), arrival, finish, prompt, reusable, 0, "tool_calls", ("x",), (), nxt
    )


def _hand_trace() -> list[TraceCall]:
    """Three sessions of 10-token prefixes; a cache of 20 tokens holds two.

    t=0..1: a0, b0, c0 run and end at t=1 (in that order); a returns at 2, b at 10, c at 5; then a at 3,
    c at 6 again. Bélády at t=1 must evict one of a, b, c: b's next use (10) is furthest, so it goes; a
    (t=2) and c (t=5) hit. LRU evicts the least recently inserted, a, so a misses at t=2.
    """
    inf = math.inf
    return [
        _call("a", 0, 0.0, 1.0, 10, 0, 2.0),
        _call("b", 0, 0.0, 1.0, 10, 0, 10.0),
        _call("c", 0, 0.0, 1.0, 10, 0, 5.0),
        _call("a", 1, 2.0, 2.5, 10, 10, inf),
        _call("c", 1, 5.0, 5.5, 10, 10, inf),
        _call("b", 1, 10.0, 10.5, 10, 10, inf),
    ]


def test_belady_on_a_case_solved_by_hand() -> None:
    events = _events([_hand_trace()])
    belady = replay(events, BeladyPolicy("belady", 20))
    # Only b misses its 10 reusable tokens; the three cold first prompts (30) are recomputed by everyone.
    assert belady.avoidable == 10
    assert belady.recomputed == 30 + 10
    lru = replay(events, LruPolicy("lru", 20))
    # LRU: at t=1 the third insert (c) evicts a; a misses at 2 (10). At 2.5 a (ended) is inserted and
    # evicts b (least recent); c hits at 5; b misses at 10: 20 in all.
    assert lru.avoidable == 20


def test_belady_drops_a_session_that_never_comes_back_first() -> None:
    inf = math.inf
    trace = [
        _call("done", 0, 0.0, 1.0, 10, 0, inf),
        _call("x", 0, 0.0, 1.0, 10, 0, 50.0),
        _call("y", 0, 0.5, 1.5, 10, 0, 60.0),
        _call("x", 1, 50.0, 51.0, 10, 10, inf),
        _call("y", 1, 60.0, 61.0, 10, 10, inf),
    ]
    events = _events([trace])
    assert replay(events, BeladyPolicy("belady", 20)).avoidable == 0
    # Room for one entry. LRU: at 1.0 `done` then `x` go in (x evicts done); at 1.5 `y` evicts x, so x
    # misses at 50; x's finished call at 51 then evicts y, which misses at 60: 20.
    assert replay(events, LruPolicy("lru", 10)).avoidable == 20
    # Bélády: at 1.0 it drops `done` (never used again); at 1.5 y's next use (60) is further than x's (50),
    # so y goes; x hits at 50; y misses at 60: 10.
    assert replay(events, BeladyPolicy("belady", 10)).avoidable == 10


@pytest.mark.parametrize("capacity", [0, 10, 20, 30])
def test_belady_is_never_worse_than_lru_on_equal_sizes(capacity: int) -> None:
    """With equal entry sizes Bélády's rule is optimal, so no online policy can beat it."""
    import random

    rng = random.Random(capacity)
    calls: list[TraceCall] = []
    for s in range(6):
        t = rng.uniform(0, 5)
        times = [t + i * rng.uniform(1, 20) for i in range(6)]
        for k, at in enumerate(times):
            nxt = times[k + 1] if k + 1 < len(times) else math.inf
            calls.append(_call(f"s{s}", k, at, at + 0.5, 10, 10 if k else 0, nxt))
    events = _events([calls])
    best = replay(events, BeladyPolicy("b", capacity)).avoidable
    assert best <= replay(events, LruPolicy("l", capacity)).avoidable
    assert best <= replay(events, FixedTtlPolicy("t", capacity, 3.0)).avoidable
