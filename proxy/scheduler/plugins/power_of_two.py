"""`power-of-two-picker`: samples two candidates at random and keeps the better-scored one.

With a load scorer this is "least request, power of two choices": nearly as good as the global least-loaded
choice, without herding every new call onto the same momentarily idle replica.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.scheduler.framework import Picker
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo


class PowerOfTwoPicker(Picker):
    """Contract: returns one of two distinct random candidates (the only one if there is one), the one with
    the higher score, the first sampled on a tie."""

    type_name = "power-of-two-picker"

    def pick(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Mapping[ReplicaId, float]
    ) -> ReplicaId:
        return self.pick_each(req, replicas, [scores.get(r.replica_id, 0.0) for r in replicas])

    def pick_each(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Sequence[float]
    ) -> ReplicaId:
        if len(replicas) == 1:
            return replicas[0].replica_id
        a, b = self.rng.sample(range(len(replicas)), 2)  # the same draws as sampling the replicas themselves
        return replicas[b].replica_id if scores[b] > scores[a] else replicas[a].replica_id
