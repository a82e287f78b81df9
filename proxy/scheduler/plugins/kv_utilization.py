"""`kv-cache-utilization-scorer`: prefers replicas with free KV-cache space (llm-d's scorer of that name)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.scheduler.framework import Scorer, by_replica
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo


class KvUtilizationScorer(Scorer):
    """Contract: score = 1 - kv_usage (scraped `vllm:kv_cache_usage_perc`), clamped to [0, 1]."""

    type_name = "kv-cache-utilization-scorer"

    def score(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Mapping[ReplicaId, float]:
        return by_replica(replicas, self.score_each(req, replicas))

    def score_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> list[float]:
        return [min(1.0, max(0.0, 1.0 - r.kv_usage)) for r in replicas]
