"""A pooled upstream connection's deadline (`_Connection.set_deadline`): one loop timer behind every call's
first-byte and idle timeouts, so a call that moves the deadline on makes no timer; the listener hears of the
deadline once it has passed, never before, and never of one that was cleared or moved on."""

from __future__ import annotations

import asyncio

from proxy.upstream_pool import _Connection


class _Listener:
    def __init__(self, conn: _Connection) -> None:
        self.conn = conn
        self.passed: list[float] = []  # the loop time at each `deadline_passed`, with the deadline then due

    def progress(self) -> None:
        pass

    def deadline_passed(self) -> None:
        self.passed.append(self.conn.loop.time())


async def test_a_deadline_moved_on_rings_once_at_the_later_time_and_a_cleared_one_never() -> None:
    conn = _Connection()
    listener = _Listener(conn)
    conn.listener = listener
    loop = conn.loop
    first = loop.time() + 0.02
    conn.set_deadline(first)
    alarm = conn._alarm
    later = loop.time() + 0.06
    conn.set_deadline(later)  # moved on: the same timer, which re-arms when it rings
    assert conn._alarm is alarm
    await asyncio.sleep(0.12)
    assert len(listener.passed) == 1 and listener.passed[0] >= later
    assert conn.deadline == 0.0
    conn.set_deadline(loop.time() + 0.02)
    conn.clear_deadline()  # the call ended first
    await asyncio.sleep(0.06)
    assert len(listener.passed) == 1


async def test_an_earlier_deadline_makes_a_new_timer_and_the_listener_then_is_the_one_told() -> None:
    conn = _Connection()
    old, new = _Listener(conn), _Listener(conn)
    conn.listener = old
    loop = conn.loop
    conn.set_deadline(loop.time() + 30.0)  # a long first-byte timeout
    conn.clear_deadline()
    conn.listener = new  # the connection's next call, with a shorter (idle) timeout
    soon = loop.time() + 0.02
    conn.set_deadline(soon)
    await asyncio.sleep(0.08)
    assert old.passed == [] and len(new.passed) == 1 and new.passed[0] >= soon


async def test_a_closed_connection_lets_go_of_its_timer() -> None:
    conn = _Connection()
    conn.listener = _Listener(conn)
    conn.set_deadline(conn.loop.time() + 30.0)
    assert conn._alarm is not None
    conn.connection_lost(None)
    assert conn._alarm is None
