"""Routing by model when replicas serve different models.

`ModelFilter` is a routing-framework filter the shell adds to the policy it builds: a call naming a model
goes only to replicas whose `/v1/models` lists it. Contract: replicas whose models are not known yet, and
calls naming no model or a model no replica lists, are not filtered (the replica answers an unknown model
with its own 404), so routing never stops because the model map is incomplete. The health loop keeps the map
(`ReplicaModels`) up to date.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from proxy.scheduler.framework import Filter, PluginParams
from proxy.scheduler.types import ReplicaView, RequestInfo


class ReplicaModels:
    """Replica id -> the model ids its `/v1/models` listed last."""

    def __init__(self) -> None:
        self.by_replica: dict[str, frozenset[str]] = {}

    def update(self, replica_id: str, models: frozenset[str]) -> None:
        self.by_replica[replica_id] = models

    def forget(self, replica_id: str) -> None:
        self.by_replica.pop(replica_id, None)


class ModelFilter(Filter):
    type_name = "model-filter"

    def __init__(self, models: ReplicaModels) -> None:
        super().__init__(PluginParams(), random.Random(0))
        self.models = models

    def filter(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Sequence[ReplicaView]:
        known = self.models.by_replica
        if not req.model or not known:
            return replicas
        serving = [r for r in replicas if req.model in known.get(r.replica_id, frozenset())]
        if serving:
            unknown = [r for r in replicas if r.replica_id not in known]
            return [*serving, *unknown]
        return replicas
