"""The virtual clock and event heap of the discrete-event cluster.

Contract:
- `schedule(at, action, arg)` queues `action(arg)` to run at virtual time `at` (seconds); `at` may equal `now`
  but never precede it, nor be NaN or infinite (ValueError): time never runs backwards or stalls.
- `run()` runs events in time order until none is left; events due at the same time run in the order they
  were scheduled (FIFO), so a run is a deterministic function of its inputs. While an event runs, `now` is
  its time; actions may schedule more events.
- An action may return a time instead of None: the same action and argument are then scheduled again at
  that time, exactly as if the action had ended with `schedule(at, action, arg)` (a stepping replica's next
  step): one heap operation instead of a pop and a push.
- The queue is also the clock: `queue()` returns `now`, so it can be injected wherever a clock is expected
  (the scheduler core takes one).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, Final, TypeVar

from loadtests.des.interrupts import let_signals_in, simulating

T = TypeVar("T")
_INF = float("inf")
_SIGNAL_CHECK_MASK: Final = (1 << 14) - 1  # pending signals let in every 16,384 events (a few ms of a run)


class EventQueue:
    """A heap of (time, sequence number, action, argument); see the module contract."""

    __slots__ = ("_heap", "_seq", "events_run", "now")

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.events_run = 0
        self._seq = 0
        self._heap: list[tuple[float, int, Callable[[Any], float | None], Any]] = []

    def __call__(self) -> float:
        return self.now

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, at: float, action: Callable[[T], float | None], arg: T) -> None:
        if not self.now <= at < _INF:  # NaN fails too: a NaN time would never let the clock move on
            raise ValueError(
                f"cannot schedule an event at {at}: event times must be finite, not before now ({self.now})"
            )
        self._seq += 1
        heapq.heappush(self._heap, (at, self._seq, action, arg))

    def run(self) -> None:
        """Run every event, including those the running ones schedule, in (time, FIFO) order. Signals that
        `saga bench` handles are raised at the loop's checks only (loadtests/des/interrupts.py)."""
        with simulating():
            self._run()

    def _run(self) -> None:
        heap = self._heap
        pop = heapq.heappop
        replace = heapq.heapreplace
        count = 0
        try:
            while heap:
                # the event stays at the top while it runs: what it schedules comes after it (a later
                # time, or the same time and a larger sequence number), so it is still the top after
                at, _, action, arg = heap[0]
                self.now = at
                count += 1
                if not count & _SIGNAL_CHECK_MASK:
                    let_signals_in()  # (Ctrl-C: a KeyboardInterrupt from here ends the run)
                again = action(arg)
                if again is None:
                    pop(heap)
                else:
                    if not at <= again < _INF:
                        raise ValueError(f"cannot schedule an event at {again}: see EventQueue.schedule")
                    self._seq += 1
                    replace(heap, (again, self._seq, action, arg))
        finally:
            self.events_run += count
