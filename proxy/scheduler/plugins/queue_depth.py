"""`queue-scorer`: prefers replicas with shorter queues (llm-d's queue scorer).

Queue depth is the replica's scraped `vllm:num_requests_waiting` plus the calls this router has in flight
there and that the scrape has not seen yet; min-max normalised over the candidates, as llm-d does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.scheduler.framework import Scorer, by_replica
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo


class QueueScorer(Scorer):
    """Contract: 1.0 for the shortest queue, 0.0 for the longest, linear between; all 1.0 when equal."""

    type_name = "queue-scorer"

    def score(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Mapping[ReplicaId, float]:
        return by_replica(replicas, self.score_each(req, replicas))

    def score_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> list[float]:
        depth = [r.waiting + max(0, r.in_flight - r.running) for r in replicas]
        if not depth:
            return []
        low, high = min(depth), max(depth)
        if high == low:
            return [1.0] * len(depth)
        return [(high - d) / (high - low) for d in depth]
