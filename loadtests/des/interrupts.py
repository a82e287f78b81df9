"""What the compiled event loop calls now and then so that Ctrl-C and SIGTERM reach a running simulation, and
when.

Python runs a signal's handler only when it next runs interpreted code (the compiled loop,
loadtests/des/event_queue.py, could run none for ~20 s: Ctrl-C during `saga bench des` went unheard until a
policy's run ended), or when C code asks for it: CPython's long division does, mid-computation, and a
handler raising there, inside compiled code whose big-integer arithmetic mypyc takes to fail only for want
of memory, aborted the bench ("fatal: out of memory", SIGABRT; one `make test` run in four, the forty-fifth
session). So while a simulation runs, `saga bench`'s handler (`interrupt`) only holds the signal, and the
loop's periodic call (`let_signals_in`) raises it, from interpreted code, where a KeyboardInterrupt is an
ordinary exception. This module is deliberately not compiled.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

_held = 0  # the first signal that arrived while a simulation ran (0: none), raised at its next check
_simulating = 0  # simulations running (nested: a cluster run within another's setup)


def interrupt(signum: int, _frame: object) -> None:
    """`saga bench`'s handler of SIGINT, SIGTERM and SIGHUP: a KeyboardInterrupt, at once unless a
    simulation runs (then at its next check, `let_signals_in`)."""
    global _held
    if _simulating:
        _held = _held or signum
        return
    raise KeyboardInterrupt(signal.Signals(signum).name)


def let_signals_in() -> None:
    """Raises the held signal, if any; being called as interpreted code is what runs pending handlers."""
    global _held
    if _held:
        signum, _held = _held, 0
        raise KeyboardInterrupt(signal.Signals(signum).name)


@contextmanager
def simulating() -> Iterator[None]:
    """A simulation's run: signals held for its checks; one that arrived after its last check is raised
    when it ends."""
    global _simulating
    _simulating += 1
    try:
        yield
    finally:
        _simulating -= 1
    if not _simulating:
        let_signals_in()
