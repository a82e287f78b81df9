"""`round-robin-picker`: takes the candidates in turn, ignoring scores (vllm-router's `round_robin`)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from proxy.scheduler.framework import Picker, PluginParams
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo


class RoundRobinPicker(Picker):
    """Contract: over k calls with the same n candidates, each candidate is picked k/n times (±1)."""

    type_name = "round-robin-picker"

    def __init__(self, params: PluginParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        self._next = 0

    def pick(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Mapping[ReplicaId, float]
    ) -> ReplicaId:
        chosen = replicas[self._next % len(replicas)]
        self._next += 1
        return chosen.replica_id

    def pick_each(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Sequence[float]
    ) -> ReplicaId:
        return self.pick(req, replicas, {})  # the scores play no part here
