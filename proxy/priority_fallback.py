"""Which replicas refused a request priority, remembered for a while (sans-IO: the clock is injected).

Contract: vLLM without `--scheduling-policy priority` answers 400 ("Priority scheduling is not enabled") to a
request that carries a priority; the proxy then sends that replica's calls without one. The refusal is
remembered for `reprobe_after_s` only: the next call after that carries its priority again (a re-probe), so a
replica restarted with the priority policy gets SAGA's ordering back without restarting the proxy. A replica
removed from routing (admin API, DNS discovery) is forgotten at once: the same URL added again is asked
again.
Expired entries are dropped whenever a refusal is remembered, so the memory holds at most the replicas that
refused within the last `reprobe_after_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class PriorityRefusals:
    def __init__(self, reprobe_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not reprobe_after_s > 0:
            raise ValueError(f"reprobe_after_s must be > 0, got {reprobe_after_s}")
        self.reprobe_after_s = reprobe_after_s
        self._clock = clock
        self._until: dict[str, float] = {}  # replica id -> when to ask it again

    def refuses(self, replica_id: str) -> bool:
        """Whether `replica_id`'s calls go without a priority now (False once its refusal is old)."""
        if not self._until:  # the usual case: every replica takes priorities
            return False
        until = self._until.get(replica_id)
        if until is None:
            return False
        if self._clock() < until:
            return True
        del self._until[replica_id]  # time to ask again
        return False

    def remember(self, replica_id: str) -> None:
        now = self._clock()
        for old in [r for r, until in self._until.items() if until <= now]:
            del self._until[old]
        self._until[replica_id] = now + self.reprobe_after_s

    def forget(self, replica_id: str) -> None:
        self._until.pop(replica_id, None)

    def __len__(self) -> int:
        return len(self._until)
