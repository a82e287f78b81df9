"""`cache-aware-picker`: SGLang router's cache-aware policy, on the router's approximate prefix index.

As SGLang's gateway does it: when load is imbalanced — the busiest replica has more than
`balance_abs_threshold` more calls in flight than the idlest AND more than `balance_rel_threshold` times as
many — the call goes to the least loaded replica. Otherwise it goes to the replica with the longest cached
prefix if that covers more than `cache_threshold` of the prompt, else to the replica whose cache the index
believes emptiest (the most room for a new prefix). Either way the call's chunks are recorded on the replica
it went to. SGLang keeps a radix tree of prompt text; here the tree is the chain of 256-token chunk hashes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from proxy.scheduler.framework import Picker, PluginParams
from proxy.scheduler.plugin_params import CacheAwareParams
from proxy.scheduler.prefix_index import PrefixIndex
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo


class CacheAwarePicker(Picker):
    """Contract: returns a candidate by the rules above; ties go to the first candidate in order, so the
    choice is deterministic for a given history."""

    type_name = "cache-aware-picker"
    uses_prefix_hashes = True
    Params = CacheAwareParams

    def __init__(self, params: PluginParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        assert isinstance(params, CacheAwareParams)
        self.p = params
        self.index = PrefixIndex(params.capacity_chunks)

    def pick(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Mapping[ReplicaId, float]
    ) -> ReplicaId:
        def load(r: ReplicaView) -> int:
            return r.in_flight

        idlest = min(replicas, key=load)
        busiest = max(replicas, key=load)
        imbalanced = load(busiest) - load(idlest) > self.p.balance_abs_threshold and load(
            busiest
        ) > self.p.balance_rel_threshold * load(idlest)
        if imbalanced or not req.prefix_hashes:
            return idlest.replica_id
        matched = self.index.matches(req.prefix_hashes)
        best = max(replicas, key=lambda r: matched.get(r.replica_id, 0))
        if matched.get(best.replica_id, 0) / len(req.prefix_hashes) > self.p.cache_threshold:
            return best.replica_id
        return min(replicas, key=lambda r: self.index.size(r.replica_id)).replica_id

    def pick_each(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Sequence[float]
    ) -> ReplicaId:
        return self.pick(req, replicas, {})  # the scores play no part here

    def on_dispatch(self, req: RequestInfo, replica_id: ReplicaId) -> None:
        self.index.insert(req.prefix_hashes, replica_id)
