"""The sync loop of `saga serve --workers N`: every few ms, publish this worker's load and tell the core the
others'.

Each worker's core schedules only the sessions it owns (proxy/worker_set.py), so alone it would admit as if
it had every replica's whole KV capacity (N workers: up to N times over) and place calls seeing only its
own in flight. Every `SYNC_INTERVAL_S` this loop writes the core's own totals per replica (`own_load`) to the
shared table (proxy/shared_load.py), sums the other live workers' and gives the core what changed
(`foreign_load`); decisions that new room allows go to the handlers like the health loop's. The per-call path
does no new work: the figures are at most one period (plus the other worker's) stale. In the same step it
publishes what this worker's predictor learned and replays the other workers' (proxy/shared_learning.py), so
every worker's Agent Execution Graphs learn from every worker's tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from proxy.scheduler import Decision, SchedulerCore
from proxy.shared_learning import LearningRings
from proxy.shared_load import HELD_NOW, TENANT_WORDS, WAITING_NOW, LoadTable, replica_key
from proxy.worker_set import WorkerSet

log = logging.getLogger("saga.load_sync")

SYNC_INTERVAL_S = 0.015
# A region not refreshed for this long is a dead worker's: ignored. Well above the period, so an event loop
# that stalls for a while (a long garbage collection, a burst of calls) does not make a live worker vanish.
STALE_AFTER_S = 0.5


class LoadSync:
    """One worker's side of the table: `step` publishes, reads and updates the core once."""

    def __init__(
        self,
        core: SchedulerCore,
        table: LoadTable,
        stale_after_s: float = STALE_AFTER_S,
        rings: LearningRings | None = None,
    ) -> None:
        self.core = core
        self.table = table
        self.rings = rings
        if rings is not None:
            core.predictor.keep_learned()
        self.stale_after_ns = int(stale_after_s * 1e9)
        core.share_bounds(table.live_count(HELD_NOW), table.live_count(WAITING_NOW))
        self._keys: dict[str, int] = {}  # replica id -> its table key (hashed once)
        self._tenant_keys: dict[str, int] = {}  # tenant -> its key (`min_active_tenants` over every worker)
        self.dropped = 0  # replicas left out of the last publish (more than the table's slots)

    def key_of(self, replica_id: str) -> int:
        return _cached_key(self._keys, replica_id, 4 * self.table.slots)

    def tenant_key(self, tenant: str) -> int:
        return _cached_key(self._tenant_keys, tenant, 4096)

    def step(self, now_ns: int | None = None) -> list[Decision]:
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        core, keys = self.core, self._keys
        rings = self.rings
        if rings is not None:
            rings.publish(core.predictor.take_learned())
            core.predictor.learn(rings.read_others())
        ids: list[str] = []
        own: list[tuple[int, int, int, int, int]] = []
        for replica_id, reserved, in_flight, held, released in core.own_load():
            key = keys.get(replica_id)
            own.append((self.key_of(replica_id) if key is None else key, reserved, in_flight, held, released))
            ids.append(replica_id)
        active, latest = core.own_tenants(TENANT_WORDS)
        tenants = [self.tenant_key(t) for t in latest]
        dropped = self.table.publish(own, now_ns, core.own_waiting(), core.own_admitted(), active, tenants)
        if dropped and not self.dropped:
            log.warning(
                "%d replicas beyond the load table's %d slots: the other workers do not see this worker's "
                "load on them",
                dropped,
                self.table.slots,
            )
        self.dropped = dropped
        totals = self.table.others(now_ns, self.stale_after_ns)
        decisions: list[Decision] = []
        views = core.replicas
        lanes = self.table.lanes
        lane_turns: dict[str, dict[int, int]] = {}
        for replica_id, (key, *_) in zip(ids, own, strict=True):
            reserved, in_flight = totals.get(key, (0, 0))
            view = views[replica_id]
            if reserved != view.foreign_reserved_tokens or in_flight != view.foreign_in_flight:
                decisions += core.foreign_load(replica_id, reserved, in_flight)
            if lanes and key in lanes:
                lane_turns[replica_id] = lanes[key]
        table = self.table
        core.foreign_tenants(len(table.tenants.difference(tenants)) + table.tenants_unlisted)
        decisions += core.foreign_lanes(lane_turns)
        # last: what waits here may take room only as the others' reservations now leave it
        return decisions + core.foreign_waiting(self.table.waiting, self.table.turns)


def _cached_key(cache: dict[str, int], name: str, bound: int) -> int:
    """`name`'s table key, hashed once; past `bound` names (ones that came and went) the cache starts over."""
    key = cache.get(name)
    if key is None:
        if len(cache) > bound:
            cache.clear()
        key = cache[name] = replica_key(name)
    return key


async def load_sync_loop(
    core: SchedulerCore,
    workers: WorkerSet,
    apply: Callable[[list[Decision]], None],
    interval_s: float = SYNC_INTERVAL_S,
    on_rings: Callable[[LearningRings], None] = lambda rings: None,
) -> None:
    """Run `LoadSync.step` every `interval_s` on the table in the worker directory until cancelled."""
    try:
        table = LoadTable(workers.directory, workers.count, workers.index)
    except OSError as err:  # say so at once: a background task's exception would show only at shutdown
        log.error(
            "no shared load table in %s (%s): this worker schedules on its own load alone",
            workers.directory,
            err,
        )
        return
    try:
        rings: LearningRings | None = LearningRings(workers.directory, workers.count, workers.index)
    except OSError as err:
        log.error(
            "no shared learning rings in %s (%s): this worker learns from its own tasks alone",
            workers.directory,
            err,
        )
        rings = None
    if rings is not None:
        on_rings(rings)  # its counters on /metrics
    sync = LoadSync(core, table, rings=rings)
    failures = 0
    try:
        while True:
            try:
                apply(sync.step())
            except Exception:  # a bug here must not end the sharing for the worker's whole life
                failures += 1
                if failures % 1000 == 1:  # every ~15 s while it lasts, not every period
                    log.exception("load sync step failed (%d times)", failures)
            await asyncio.sleep(interval_s)
    finally:
        table.close()
        if rings is not None:
            rings.close()
