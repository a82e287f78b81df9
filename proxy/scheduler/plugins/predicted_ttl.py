"""`predicted-ttl-retention`: asks the replica to keep a call's KV for as long as the learned graph says the
session will take to come back.

The core binds its `predictor.Predictor` (`bind_predictor`) when the policy is built into it. At dispatch the
call's answer is not known yet, so the TTL comes from the session's return distribution after this call — a
mixture over the states the call may leave it in (`Predictor.return_model_after_call`): its `ttl_quantile`,
capped at `max_ttl_s`. No retention when the session will probably not come back (`p_return` below
`min_return_probability`, e.g. a task that usually ends here), nor for a cold start unless `cold_ttl_s` is
set.

Contract: returns None or a TTL in (0, `max_ttl_s`]; without a bound predictor it returns `cold_ttl_s`.
"""

from __future__ import annotations

import random

from predictor import Predictor
from proxy.scheduler.framework import PluginParams, Retention
from proxy.scheduler.types import ReplicaId, RequestInfo


class PredictedTtlParams(PluginParams):
    ttl_quantile: float = 0.95
    max_ttl_s: float = 300.0
    min_return_probability: float = 0.2
    cold_ttl_s: float | None = None


class PredictedTtlRetention(Retention):
    type_name = "predicted-ttl-retention"
    Params = PredictedTtlParams

    def __init__(self, params: PluginParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        assert isinstance(params, PredictedTtlParams)
        if not 0 < params.ttl_quantile <= 1:
            raise ValueError(
                f"predicted-ttl-retention: ttl_quantile must be in (0, 1], got {params.ttl_quantile}"
            )
        if params.max_ttl_s <= 0:
            raise ValueError(f"predicted-ttl-retention: max_ttl_s must be > 0, got {params.max_ttl_s}")
        if params.cold_ttl_s is not None and params.cold_ttl_s <= 0:
            raise ValueError(f"predicted-ttl-retention: cold_ttl_s must be > 0, got {params.cold_ttl_s}")
        self.p = params
        self.predictor: Predictor | None = None

    def bind_predictor(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def retain_ttl_s(self, req: RequestInfo, replica_id: ReplicaId) -> float | None:
        got = self.predictor.return_model_after_call(req.session_id) if self.predictor else None
        if got is None or got[1] == "prior":
            return self.p.cold_ttl_s
        model = got[0]
        if model.p_return() < self.p.min_return_probability:
            return None
        return min(max(model.quantile(self.p.ttl_quantile), 1e-3), self.p.max_ttl_s)
