"""Routing by model when replicas serve different models.

`ModelFilter` is a routing-framework filter the shell adds to the policy it builds: a call naming a model
goes only to replicas whose `/v1/models` lists it, whichever decision routes it (placement, admission among
the replicas with room, a retry among those not tried; work stealing takes only replicas the filters keep).
Contract: replicas whose models are not known yet stay candidates, and calls naming no model or a model no
replica lists are not filtered (the replica answers an unknown model with its own 404), so routing never
stops because the model map is incomplete. A call whose model some replica lists, with none of them among
the candidates, has no candidate: it waits for room, or is refused, rather than reach a replica of another
model. The health loop keeps the map (`ReplicaModels`) up to date.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

from proxy.scheduler.framework import Filter, PluginParams
from proxy.scheduler.types import ReplicaView, RequestInfo

T = TypeVar("T")


class ReplicaModels:
    """Replica id -> the model ids its `/v1/models` listed last; and model -> the replicas listing it."""

    def __init__(self) -> None:
        self.by_replica: dict[str, frozenset[str]] = {}
        self.serving: dict[str, frozenset[str]] = {}

    def update(self, replica_id: str, models: frozenset[str]) -> None:
        if self.by_replica.get(replica_id) != models:
            self.by_replica[replica_id] = models
            self._reindex()

    def keep_only(self, replica_ids: Iterable[str]) -> None:
        """Forget the replicas that are gone (removed, or no longer resolved by discovery)."""
        keep = set(replica_ids)
        gone = [r for r in self.by_replica if r not in keep]
        for r in gone:
            del self.by_replica[r]
        if gone:
            self._reindex()

    def _reindex(self) -> None:
        serving: dict[str, set[str]] = {}
        for replica_id, models in self.by_replica.items():
            for model in models:
                serving.setdefault(model, set()).add(replica_id)
        self.serving = {model: frozenset(ids) for model, ids in serving.items()}


def for_model(
    models: ReplicaModels, model: str | None, items: Sequence[T], replica_of: Callable[[T], str]
) -> Sequence[T]:
    """The items whose replica lists `model`, then those whose models are not known yet. When some replica
    lists it, that is all, possibly none of `items` (a subset of the fleet: replicas with room, those not
    tried yet); when no replica lists it, or no model is named, all of `items` (the replica answers an
    unknown model with its own 404). Every known replica listing it (one model, the usual fleet): `items`
    as they are, without a look at each (this runs on every routed call)."""
    serving = models.serving.get(model) if model else None
    if serving is None or len(serving) == len(models.by_replica):
        return items
    known = models.by_replica
    listing = [x for x in items if replica_of(x) in serving]
    unknown = [x for x in items if replica_of(x) not in known]
    return [*listing, *unknown] if unknown else listing


def _replica_id(view: ReplicaView) -> str:
    return view.replica_id


class ModelFilter(Filter):
    type_name = "model-filter"

    def __init__(self, models: ReplicaModels) -> None:
        super().__init__(PluginParams(), random.Random(0))
        self.models = models

    def filter(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Sequence[ReplicaView]:
        return for_model(self.models, req.model, replicas, _replica_id)
