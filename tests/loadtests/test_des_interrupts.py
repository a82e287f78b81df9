"""Signals during a simulation (loadtests/des/interrupts.py): `saga bench`'s handler holds them while the
compiled event loop runs, and the loop's periodic check raises them from interpreted code. Raised where the
signal arrived, inside compiled big-integer arithmetic that CPython interrupts (long division checks for
signals), a KeyboardInterrupt aborted the bench: "fatal: out of memory", SIGABRT (the forty-fifth session's
`make test`)."""

from __future__ import annotations

import signal

import pytest

from loadtests.des import interrupts
from loadtests.des.event_queue import EventQueue


def test_a_signal_during_a_simulation_is_held_until_its_check() -> None:
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), interrupts.simulating():
        interrupts.interrupt(signal.SIGTERM, None)  # held: no exception here
        interrupts.let_signals_in()
    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        interrupts.interrupt(signal.SIGINT, None)  # no simulation: at once
    with pytest.raises(KeyboardInterrupt, match="SIGHUP"), interrupts.simulating():
        interrupts.interrupt(signal.SIGHUP, None)  # after the last check: raised as the simulation ends
    interrupts.let_signals_in()  # nothing held any more


def test_the_event_loop_stops_at_its_next_check_after_a_signal() -> None:
    queue = EventQueue()
    ran: list[int] = []

    def event(n: int) -> None:
        ran.append(n)
        if n == 10:  # the signal arrives while an event runs, in compiled code
            interrupts.interrupt(signal.SIGINT, None)

    for n in range(40_000):
        queue.schedule(float(n), event, n)
    with pytest.raises(KeyboardInterrupt, match="SIGINT"):
        queue.run()
    assert 10 < len(ran) < 40_000  # the events up to the check ran, the rest did not
    interrupts.let_signals_in()  # nothing left held
