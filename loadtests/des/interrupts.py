"""What the compiled event loop calls now and then so that Ctrl-C and SIGTERM reach a running simulation.

Python runs a signal's handler (Ctrl-C's KeyboardInterrupt, `saga bench`'s SIGTERM) only when it next runs
interpreted code, and the compiled loop (loadtests/des/event_queue.py) could run none for ~20 s: Ctrl-C
during `saga bench des` went unheard until a policy's run ended. This module is deliberately not compiled.
"""


def let_signals_in() -> None:
    """Nothing: being called as interpreted code is what runs the pending signal handlers (they may raise)."""
