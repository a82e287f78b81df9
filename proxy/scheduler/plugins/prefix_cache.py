"""`prefix-cache-scorer`: prefers replicas that (probably) hold the longest prefix of the prompt.

llm-d's approximate prefix-cache scorer: the router remembers the prompt chunks it sent to each replica and
scores a replica by the fraction of the prompt's leading chunks it would find there. It sees no KV events, so
its view ages by an LRU capacity per replica (`capacity_chunks`, default ~ a 430k-token H100 cache of
256-token chunks). Where the replicas' KV events say how much of the session's context a replica still
caches (`RequestInfo.kv_resident`, proxy/kv_residency.py), that figure replaces the estimate there.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from proxy.scheduler.framework import PluginParams, Scorer, by_replica
from proxy.scheduler.plugin_params import PrefixCacheParams
from proxy.scheduler.prefix_index import PrefixIndex
from proxy.scheduler.scoring import prefix_scores
from proxy.scheduler.types import PREFIX_CHUNK_BYTES, PREFIX_CHUNK_TOKENS, ReplicaId, ReplicaView, RequestInfo


class PrefixCacheScorer(Scorer):
    """Contract: score = matched leading chunks / prompt chunks, in [0, 1]; all 0 when the call carries no
    prefix hashes. Remembers a call's chunks on the replica it is dispatched to."""

    type_name = "prefix-cache-scorer"
    uses_prefix_hashes = True
    Params = PrefixCacheParams

    def __init__(self, params: PluginParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        assert isinstance(params, PrefixCacheParams)
        self.index = PrefixIndex(params.capacity_chunks)

    def score(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Mapping[ReplicaId, float]:
        return by_replica(replicas, self.score_each(req, replicas))

    def score_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> list[float]:
        total = len(req.prefix_hashes)
        if not total:
            return [0.0] * len(replicas)
        scores = prefix_scores(self.index.depths(req.prefix_hashes, replicas), total)  # compiled
        return _resident_shares(req, replicas, scores)

    def held_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> list[float]:
        """The share of the call's whole prompt each of `replicas` holds (not a score: its leading chunks
        matched over the prompt's length, its last part short of a chunk counted as not held), or the
        replica's own word where KV events give it; all 0 when the call carries no prefix hashes. Over HTTP
        a chunk is `PREFIX_CHUNK_BYTES` of the prompt (proxy/prompt_shape.py), in the
        discrete-event cluster (no body) `PREFIX_CHUNK_TOKENS` tokens."""
        hashes = req.prefix_hashes
        size, chunk = req.prompt_chars, PREFIX_CHUNK_BYTES
        if not size:
            size, chunk = req.prompt_tokens, PREFIX_CHUNK_TOKENS
        if not hashes or size <= 0:
            return [0.0] * len(replicas)
        shares = [min(1.0, depth * chunk / size) for depth in self.index.depths(hashes, replicas)]
        return _resident_shares(req, replicas, shares)

    def on_dispatch(self, req: RequestInfo, replica_id: ReplicaId) -> None:
        self.index.insert(req.prefix_hashes, replica_id)


def _resident_shares(req: RequestInfo, replicas: Sequence[ReplicaView], shares: list[float]) -> list[float]:
    """`shares`, with the replicas' own word (KV events: `RequestInfo.kv_resident`) where they gave it."""
    resident = req.kv_resident
    if resident and req.prompt_tokens > 0:
        for i, r in enumerate(replicas):
            held = resident.get(r.replica_id)
            if held is not None:
                shares[i] = min(1.0, held / req.prompt_tokens)
    return shares
