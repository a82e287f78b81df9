"""PriorityRefusals: a refused priority is remembered for reprobe_after_s, then the replica is asked again."""

from __future__ import annotations

import pytest

from proxy.priority_fallback import PriorityRefusals


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_refusal_holds_until_the_reprobe_time_then_the_replica_is_asked_again() -> None:
    clock = Clock()
    refusals = PriorityRefusals(60.0, clock)
    assert not refusals.refuses("http://a")
    refusals.remember("http://a")
    assert refusals.refuses("http://a") and not refusals.refuses("http://b")
    clock.now += 59.9
    assert refusals.refuses("http://a")
    clock.now += 0.1
    assert not refusals.refuses("http://a")  # re-probe
    assert len(refusals) == 0
    refusals.remember("http://a")  # refused again: another full period
    clock.now += 59.9
    assert refusals.refuses("http://a")


def test_forget_asks_again_at_once() -> None:
    refusals = PriorityRefusals(60.0, Clock())
    refusals.remember("http://a")
    refusals.forget("http://a")
    refusals.forget("http://never-seen")
    assert not refusals.refuses("http://a")


def test_replicas_gone_for_good_do_not_accumulate() -> None:
    clock = Clock()
    refusals = PriorityRefusals(10.0, clock)
    for i in range(1000):  # replicas come and go (discovery), each refusing once and never asked again
        refusals.remember(f"http://10.0.0.{i}")
        clock.now += 1.0
    assert len(refusals) <= 11


def test_a_nonpositive_period_is_refused() -> None:
    with pytest.raises(ValueError, match="reprobe_after_s"):
        PriorityRefusals(0.0)
