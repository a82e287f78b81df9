"""Routing by model when replicas serve different models.

`ModelFilter` is a routing-framework filter the shell adds to the policy it builds: a call naming a model
goes only to replicas whose `/v1/models` lists it. Contract: replicas whose models are not known yet, and
calls naming no model or a model no replica lists, are not filtered (the replica answers an unknown model
with its own 404), so routing never stops because the model map is incomplete. The health loop keeps the map
(`ReplicaModels`) up to date.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from proxy.scheduler.framework import Filter, PluginParams
from proxy.scheduler.types import ReplicaView, RequestInfo

T = TypeVar("T")


def for_model(
    known: Mapping[str, frozenset[str]], model: str | None, items: Sequence[T], replica_of: Callable[[T], str]
) -> Sequence[T]:
    """The items whose replica lists `model`, then those whose models are not known yet; all of them when
    no replica lists it (the replica answers an unknown model with its own 404) or no model is named."""
    if not model or not known:
        return items
    serving = [x for x in items if model in known.get(replica_of(x), frozenset())]
    if not serving:
        return items
    return [*serving, *(x for x in items if replica_of(x) not in known)]


def _replica_id(view: ReplicaView) -> str:
    return view.replica_id


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
        return for_model(self.models.by_replica, req.model, replicas, _replica_id)
