"""The scheduler core's periodic housekeeping (`SchedulerCore.tick`), in small steps.

A tick lapses the admission holds that ran out, ends the sessions the predictor saw go silent, forgets idle
sessions and releases what the release queue's gate allows. Its work grows with the calls since the last
tick (each call arms a hold; each new session is forgotten once), so run once per health round (2 s) it was
one long step: at ~1,750 calls/s of new conversations, ~3,500 lapses at once, 3-7 ms during which the event
loop served no call. Run every `HOUSEKEEPING_S` it is the same work in steps of a few dozen items, and holds
lapse within that much of their time instead of up to a health round late.

Contract: `housekeeping_loop(core, apply)` calls `apply(core.tick())` every `interval_s` until cancelled; an
exception from one tick is logged and the loop goes on (a bug must not stop the housekeeping for good).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from proxy.scheduler import Decision, SchedulerCore

log = logging.getLogger("saga.housekeeping")

HOUSEKEEPING_S = 0.05


async def housekeeping_loop(
    core: SchedulerCore, apply: Callable[[list[Decision]], None], interval_s: float = HOUSEKEEPING_S
) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            apply(core.tick())
        except Exception:
            log.exception("scheduler housekeeping (tick) failed; trying again in %g s", interval_s)
