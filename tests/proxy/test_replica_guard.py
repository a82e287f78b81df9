"""The per-replica guard: health-check thresholds and the circuit breaker, on an explicit clock."""

from __future__ import annotations

from proxy.replica_guard import GuardParams, ReplicaGuard


def test_probe_thresholds_need_consecutive_results() -> None:
    guard = ReplicaGuard(GuardParams(unhealthy_after=2, healthy_after=3))
    guard.probe(False)
    assert guard.healthy(0.0)  # one failure is below the threshold
    guard.probe(True)
    guard.probe(False)
    assert guard.healthy(0.0)  # not consecutive
    guard.probe(False)
    assert not guard.healthy(0.0)
    guard.probe(True)
    guard.probe(True)
    assert not guard.healthy(0.0)
    guard.probe(True)
    assert guard.healthy(0.0)


def test_breaker_opens_after_consecutive_failures_and_half_opens_after_cooldown() -> None:
    guard = ReplicaGuard(GuardParams(breaker_failures=3, breaker_cooldown_s=10.0))
    assert not guard.call_failed(0.0) and not guard.call_failed(1.0)
    guard.call_succeeded()  # a success resets the count
    assert not guard.call_failed(2.0) and not guard.call_failed(3.0)
    assert guard.call_failed(4.0)
    assert guard.breaker_state(5.0) == "open" and not guard.healthy(5.0)
    assert guard.healthy(14.0) and guard.breaker_state(14.0) == "half-open"
    assert guard.call_failed(15.0)  # one failure while half-open re-opens it
    assert not guard.healthy(16.0)
    assert guard.healthy(25.0)
    guard.call_succeeded()
    assert guard.breaker_state(26.0) == "closed"
    assert not guard.call_failed(27.0)  # closed again: the count starts over


def test_an_open_breaker_keeps_a_replica_out_even_when_probes_pass() -> None:
    guard = ReplicaGuard(GuardParams(breaker_failures=1, breaker_cooldown_s=5.0))
    guard.call_failed(0.0)
    guard.probe(True)
    assert not guard.healthy(1.0)
