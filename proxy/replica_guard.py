"""Per-replica health state in the shell: health-check thresholds and a circuit breaker (sans-IO).

Contract: `ReplicaGuard.healthy(now)` is what the shell reports to the core as the replica's health after each
probe round. A replica goes down after `unhealthy_after` consecutive failed probes and comes back after
`healthy_after` consecutive good ones. Independently, its circuit breaker opens after `breaker_failures`
consecutive failed calls (connect errors, first-byte timeouts, failures mid-answer, and a 5xx before any
byte once another replica answered that call without one: proxy/call_attempts.py) and keeps the replica
out for `breaker_cooldown_s`; after that it is half-open: calls flow again, the first success closes it, a
failure re-opens it at once. A single connect error already takes the replica out until the next good probe
(the core marks it down on `dispatch_failed`); the breaker is what keeps a replica whose `/health` still
answers 200 but whose calls keep failing out of rotation.
"""

from __future__ import annotations

import msgspec


class GuardParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    unhealthy_after: int = 1
    healthy_after: int = 1
    breaker_failures: int = 3
    breaker_cooldown_s: float = 10.0


class ReplicaGuard:
    def __init__(self, params: GuardParams) -> None:
        self.params = params
        self.probe_up = True
        self._probe_streak = 0  # consecutive probes disagreeing with probe_up
        self._call_failures = 0
        self._open_until: float | None = None
        self._half_open = False
        self.probe_error = ""  # why the last probe failed ("" once one passes)
        # its KV capacity is the other replicas' smallest (proxy/health.py): no page of its own read yet
        self.capacity_assumed = False

    def probe(self, ok: bool, why: str = "") -> None:
        self.probe_error = "" if ok else why
        if ok == self.probe_up:
            self._probe_streak = 0
            return
        self._probe_streak += 1
        needed = self.params.healthy_after if ok else self.params.unhealthy_after
        if self._probe_streak >= needed:
            self.probe_up, self._probe_streak = ok, 0

    def call_failed(self, now: float) -> bool:
        """Records a failed call; True when this failure opened the breaker."""
        self._call_failures += 1
        if self._open_until is not None and now < self._open_until:
            return False
        if self._half_open or self._call_failures >= self.params.breaker_failures:
            self._open_until = now + self.params.breaker_cooldown_s
            self._half_open = False
            return True
        return False

    def call_succeeded(self) -> None:
        self._call_failures = 0
        self._open_until = None
        self._half_open = False

    def breaker_state(self, now: float) -> str:
        if self._open_until is not None and now < self._open_until:
            return "open"
        return "half-open" if self._half_open or self._open_until is not None else "closed"

    def healthy(self, now: float) -> bool:
        if self._open_until is not None and now >= self._open_until:
            self._open_until, self._half_open = None, True
        return self.probe_up and self._open_until is None
