"""A bound on calls waiting in the proxy (the release queue's `max_queued`, admission's `max_waiting`) that
`saga serve --workers N` shares between its workers.

Contract: `reached(own, shared, limit)` says whether a worker holding `own` calls may hold no new one, where
`shared` (None in one process) gives the other live workers' counts as they are now (`SharedCount`; the
workers' table, proxy/shared_load.py `LiveCount`, each worker rewriting its count as it changes). A worker
always has its share of the bound, max(1, limit // workers) places, and borrows past it while the workers'
total is below `limit`. So the total stays at `limit` (past it only by calls two workers take within the same
microseconds, or by the shares of workers that filled them after another borrowed: at most `limit` +
(workers - 1) x share), where each worker bounding its own calls held up to `workers` x `limit`; and a worker
whose sessions hold none is never refused for another worker's flood before it has its share. Without
`shared`, `reached` is own >= limit.
"""

from __future__ import annotations

from typing import Protocol


class SharedCount(Protocol):
    def publish(self, own: int) -> None:
        """This worker's count is now `own`."""

    def others(self) -> int:
        """The other live workers' counts, summed."""

    def workers(self) -> int:
        """The live workers, this one included."""


def reached(own: int, shared: SharedCount | None, limit: int) -> bool:
    if own >= limit:
        return True
    if shared is None:
        return False
    workers = shared.workers()
    return workers > 1 and own >= max(1, limit // workers) and own + shared.others() >= limit
