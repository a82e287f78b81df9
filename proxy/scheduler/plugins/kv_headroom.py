"""`kv-headroom-scorer`: prefers replicas with KV left over after the workflows already admitted to them.

With admission by KV working set, each replica's `reserved_tokens` is the predicted footprint of the
workflows bound to it; the headroom is what its capacity leaves beyond that. Without admission (nothing
reserved) it reads the scraped KV usage instead, so it still steers new sessions away from full caches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.scheduler.framework import Scorer, by_replica
from proxy.scheduler.scoring import headroom_scores
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo


class KvHeadroomScorer(Scorer):
    """Contract: per candidate, 1 - max(reserved / capacity, kv_usage) clamped to [0, 1]; 1 - kv_usage
    where the capacity is unknown."""

    type_name = "kv-headroom-scorer"

    def score(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Mapping[ReplicaId, float]:
        return by_replica(replicas, self.score_each(req, replicas))

    def score_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> list[float]:
        return headroom_scores(replicas)  # compiled (scoring.py)
