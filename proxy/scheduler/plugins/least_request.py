"""`least-request-scorer`: prefers replicas with fewer calls in flight from this proxy.

The proxy's own in-flight count is exact and current, unlike scraped queue lengths, which lag by a scrape
interval; calls other clients send straight to a replica are seen through the scraped `waiting` count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.scheduler.framework import Scorer, by_replica
from proxy.scheduler.scoring import least_request_scores
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo


class LeastRequestScorer(Scorer):
    """Contract: score = 1 / ((1 + in_flight + queued + waiting) x slowness), in (0, 1]; strictly lower for a
    busier replica (`queued`: calls held for it in the proxy's release queue) and for a slower one
    (`slowness`: 1.0 unless the policy measures replicas' speed, `stealing.slower_above`)."""

    type_name = "least-request-scorer"

    def score(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Mapping[ReplicaId, float]:
        return by_replica(replicas, self.score_each(req, replicas))

    def score_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> list[float]:
        return least_request_scores(replicas)  # compiled (scoring.py)
