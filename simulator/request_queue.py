"""The engine's waiting queue: FCFS, or ordered by (priority, arrival) under the 'priority' policy.

Contract: `pop`/`peek` give the next request to admit; `prepend` puts a preempted request back so it is
admitted before the requests that arrived after it (FCFS: at the head; priority: by its original key, which
is already earlier than theirs); `remove` is O(n) and only used for aborts.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Generic, Protocol, TypeVar


class Queued(Protocol):
    @property
    def sort_key(self) -> tuple[int, float, int]: ...


T = TypeVar("T", bound=Queued)


class WaitingQueue(Generic[T]):
    """Waiting requests of one engine. `policy` is 'fcfs' or 'priority' (lower priority value first)."""

    def __init__(self, policy: str) -> None:
        if policy not in ("fcfs", "priority"):
            raise ValueError(f"unknown scheduling policy {policy!r}; known: ['fcfs', 'priority']")
        self.policy = policy
        self._fifo: deque[T] = deque()
        self._heap: list[tuple[tuple[int, float, int], T]] = []

    def __len__(self) -> int:
        return len(self._fifo) if self.policy == "fcfs" else len(self._heap)

    def append(self, item: T) -> None:
        if self.policy == "fcfs":
            self._fifo.append(item)
        else:
            heapq.heappush(self._heap, (item.sort_key, item))

    def prepend(self, item: T) -> None:
        if self.policy == "fcfs":
            self._fifo.appendleft(item)
        else:
            heapq.heappush(self._heap, (item.sort_key, item))

    def peek(self) -> T:
        return self._fifo[0] if self.policy == "fcfs" else self._heap[0][1]

    def pop(self) -> T:
        return self._fifo.popleft() if self.policy == "fcfs" else heapq.heappop(self._heap)[1]

    def remove(self, item: T) -> bool:
        if self.policy == "fcfs":
            try:
                self._fifo.remove(item)
            except ValueError:
                return False
            return True
        for i, (_, queued) in enumerate(self._heap):
            if queued is item:
                self._heap[i] = self._heap[-1]
                self._heap.pop()
                heapq.heapify(self._heap)
                return True
        return False
