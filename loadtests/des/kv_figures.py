"""KV oversubscription of a discrete-event run: it needs the tasks, not only the engines.

Contract: the cluster keeps an `Oversubscription` told of its live runs (started, not yet ended: running
a call or between calls) and samples it every `stats_interval_s`. Each sample is the total context of those
tasks (each one's conversation so far, i.e. its current or next prompt) over the cluster's KV capacity in
tokens; `peak` is the largest sample, `mean(end)` the time-average over [0, end], each sample holding until
the next.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Protocol


class _Run(Protocol):
    @property
    def conversation(self) -> _Conversation: ...


class _Conversation(Protocol):
    @property
    def tokens(self) -> Sized: ...


class Oversubscription:
    """Live tasks' context over the cluster's KV capacity, sampled over time. The cluster calls `update` when
    a task starts and after each of its calls (its conversation grew), `remove` when it ends; the total is
    kept as it changes, so a sample costs O(1)."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity_tokens = capacity_tokens
        self.context_tokens = 0  # of the live tasks
        self._context: dict[_Run, int] = {}
        self.peak = 0.0
        self._integral = 0.0
        self._last = 0.0
        self._last_at = 0.0

    def update(self, run: _Run) -> None:
        n = len(run.conversation.tokens)
        self.context_tokens += n - self._context.get(run, 0)
        self._context[run] = n

    def remove(self, run: _Run) -> None:
        self.context_tokens -= self._context.pop(run, 0)

    def sample(self, now: float) -> float:
        value = self.context_tokens / self.capacity_tokens
        self._integral += self._last * (now - self._last_at)
        self._last, self._last_at = value, now
        self.peak = max(self.peak, value)
        return value

    def mean(self, end: float) -> float:
        integral = self._integral + self._last * max(0.0, end - self._last_at)
        return integral / end if end > 0 else 0.0
