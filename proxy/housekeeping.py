"""The scheduler core's periodic housekeeping (`SchedulerCore.tick`), on its own cadence.

A tick lapses the admission holds that ran out, ends the sessions the predictor saw go silent, forgets idle
sessions and releases what the release queue's gate allows. It used to run after each health round (2 s):
its work grows with the calls since the last tick (each call arms a hold), so at ~1,750 calls/s of new
conversations one tick lapsed ~3,500 holds at once and held the event loop 4-5 ms, and a hold lapsed up to a
round late (8 s of the replicas' time in the demo at x4). Now it runs once a second of the core's clock
(`HOUSEKEEPING_S` / `time_scale` of wall time), as the discrete-event cluster ticks (`tick_interval_s`), so
the proxy lapses holds when the policy measured there does, in half the steps' size of before.

A tick lapses the holds due by its time in steps of at most `LAPSES_PER_STEP`, each in a turn of the event
loop of its own: at ~20,000 new one-call sessions a second (calls naming no session, `saga bench overhead`)
one tick had as many holds to lapse and held the loop 8-12 ms once a second, every connection's call
waiting (docs/results/overhead.md, thirty-fourth session). The same holds lapse: those due by the tick's
time. The sessions the predictor finds gone quiet end in steps of as many (a flood of one-call sessions
that went quiet ended thousands a tick, 18-22 ms at once: thirty-fifth session); one with a call since its
tick is not ended.

Contract: `housekeeping_loop(core, apply, interval_s)` calls `apply(core.tick(LAPSES_PER_STEP))` every
`interval_s`, then `apply(core.tick_more(LAPSES_PER_STEP))` once a turn of the loop while `core.ticking()`,
until cancelled; an exception from one tick is logged and the loop goes on (a bug must not stop the
housekeeping).
`housekeeping_interval_s(time_scale)` is that interval for a core whose clock runs `time_scale` times the
wall clock's: never under `MIN_WALL_S`, so an absurd time scale cannot make the loop spin.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from proxy.scheduler import Decision, SchedulerCore

log = logging.getLogger("saga.housekeeping")

HOUSEKEEPING_S = 1.0  # of the core's clock: the discrete-event cluster's tick_interval_s
LAPSES_PER_STEP = 256  # holds' wake-ups (and ended sessions) a step of a tick takes (1,024 holds: up to 2 ms)
MIN_WALL_S = 0.001  # however fast a simulated fleet's clock runs, the loop still waits between ticks


def housekeeping_interval_s(time_scale: float) -> float:
    """Wall seconds between two ticks: a second of the core's clock, which runs `time_scale` times faster."""
    return max(HOUSEKEEPING_S / time_scale, MIN_WALL_S)


async def housekeeping_loop(
    core: SchedulerCore, apply: Callable[[list[Decision]], None], interval_s: float
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            apply(core.tick(LAPSES_PER_STEP))
            while core.ticking():
                await asyncio.sleep(0)  # the calls that came meanwhile go first
                apply(core.tick_more(LAPSES_PER_STEP))
        except Exception:
            log.exception("scheduler housekeeping (tick) failed; trying again in %g s", interval_s)
