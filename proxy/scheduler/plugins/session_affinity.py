"""`session-affinity-scorer`: keeps a session on the replica that served its last call.

That replica holds the session's prefix in its KV cache, so the next call prefills only the new tokens. The
binding follows the session: if a call had to go elsewhere (the bound replica was unhealthy or filtered out),
the session is bound to where it went, since that is now where its prefix lives.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from predictor.sharded import ShardedDict
from proxy.scheduler.framework import PluginParams, Scorer, by_replica
from proxy.scheduler.scoring import affinity_scores
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo


class SessionAffinityScorer(Scorer):
    """Contract: 1.0 for the replica the session is bound to, 0.0 for every other (all 0.0 for a new
    session). Bounded memory: a binding lives until `on_session_end`."""

    type_name = "session-affinity-scorer"
    binds_sessions = True

    def __init__(self, params: PluginParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        # split over shards (predictor/sharded.py): one dict of ~100,000 sessions rebuilds itself in one step
        self.bound: ShardedDict[ReplicaId] = ShardedDict(salt=6, start_up=True)

    def score(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Mapping[ReplicaId, float]:
        return by_replica(replicas, self.score_each(req, replicas))

    def score_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> list[float]:
        home = self.bound.get(req.session_id)
        if home is None:
            return [0.0] * len(replicas)
        return affinity_scores(replicas, home)  # compiled (scoring.py)

    def on_dispatch(self, req: RequestInfo, replica_id: ReplicaId) -> None:
        self.bound[req.session_id] = replica_id

    def on_session_end(self, session_id: str) -> None:
        self.bound.pop(session_id)
