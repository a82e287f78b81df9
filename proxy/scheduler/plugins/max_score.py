"""`max-score-picker`: the candidate with the highest weighted score, ties broken at random."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from proxy.scheduler.framework import Picker
from proxy.scheduler.scoring import best_ids
from proxy.scheduler.types import ReplicaId, ReplicaView, RequestInfo

# Scores closer than this are a tie: float sums of weights must not decide placement by rounding.
_TIE = 1e-9


class MaxScorePicker(Picker):
    """Contract: returns a candidate whose score is maximal; among equals, a seeded random one."""

    type_name = "max-score-picker"
    takes_lone_candidate = True  # one candidate is the maximum, with no tie to draw on

    def pick(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Mapping[ReplicaId, float]
    ) -> ReplicaId:
        return self.pick_each(req, replicas, [scores.get(r.replica_id, 0.0) for r in replicas])

    def pick_each(
        self, req: RequestInfo, replicas: Sequence[ReplicaView], scores: Sequence[float]
    ) -> ReplicaId:
        tied = best_ids(replicas, scores, _TIE)  # compiled (scoring.py)
        return tied[0] if len(tied) == 1 else self.rng.choice(tied)
