"""`predicted-ttl-retention`: asks the replica to keep a call's KV for as long as the learned graph says the
session will take to come back, at a priority that ranks it by how soon.

The core binds its `predictor.Predictor` (`bind_predictor`) when the policy is built into it. At dispatch the
call's answer is not known yet, so the TTL comes from the session's return distribution after this call — a
mixture over the states the call may leave it in (`Predictor.return_model_after_call`): its `ttl_quantile`,
capped at `max_ttl_s`. States whose median gap exceeds `long_gap_s` (a person reading and typing after an
answer, a long sub-task) are left out of the mixture: holding KV through minutes of think time is waste, so
the TTL covers the tool-time branches only and the KV goes once they have passed. No retention when the
session will probably not come back within the held branches (`p_return` below `min_return_probability`,
e.g. a task that usually ends here, or answers a person), nor for a cold start unless `cold_ttl_s` is set.
When the call has answered, the retention is released at once (`release_after`) instead of being held to
its TTL if the answer says the session went quiet: the agent answered without calling a tool and the learned
gap after such an answer has a median over `release_answer_gap_s` (the agent handed back to a person, who
reads and types), or the state the answer left it in has a median gap over `long_gap_s`, or it probably ends
there. `release_answer_gap_s: null` turns this off.

Priority (contract v2, docs/retention-api.md; lower = more important): with `priority_base_s` set, a
retention is ranked by its predicted next use (the held mixture's median gap / its probability of return)
on a log2 scale: 1 + floor(log2(next_use / priority_base_s)), clamped to [1, `priority_levels`]. Every level
is below a call's own priority 0, so a retention never holds a waiting call back (with equal priorities a
retention held against new work, TTFT rose and TCT did not fall: docs/results/predictor.md); under pressure
the replica breaks the furthest predicted next use first (least important, then oldest) — the online Bélády
order of `predictor.retention`. With `priority_base_s` None the call's own priority is used (a hard hold).

On a replica with a CPU KV tier (vLLM's native offloading or LMCache: `vllm:cache_config_info`
`kv_offloading_size` set), `cpu_tier: "offload"` (the default) asks for no retention: the prefix goes to the
CPU tier when the GPU needs its blocks and comes back over PCIe, far cheaper than the re-prefill a
retention saves, so holding it on the GPU only takes room from running work (measured at the declared point
with 64 GiB per replica: 3-5% shorter tasks on webarena, the same on swe and mixed: docs/results/saga.md).
`cpu_tier: "hold"` retains there as anywhere else.

Contract: `retain_ttl_s` returns None or a TTL in (0, `max_ttl_s`]; without a bound predictor it returns
`cold_ttl_s`. `retain_priority` answers for the call `retain_ttl_s` last sized: None, or an int in
[1, `priority_levels`].
"""

from __future__ import annotations

import math
import random

from predictor import Predictor
from proxy.scheduler.framework import PluginParams, Retention
from proxy.scheduler.plugin_params import PredictedTtlParams
from proxy.scheduler.ttl_answers import TtlAnswers
from proxy.scheduler.types import ReplicaId, RequestInfo, Usage


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
        for name in ("max_ttl_s", "cold_ttl_s", "long_gap_s", "priority_base_s", "release_answer_gap_s"):
            value = getattr(params, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"predicted-ttl-retention: {name} must be > 0 and finite, got {value}")
        if params.priority_levels < 1:
            raise ValueError(
                f"predicted-ttl-retention: priority_levels must be >= 1, got {params.priority_levels}"
            )
        self.p = params
        self.holds_with_cpu_tier = params.cpu_tier == "hold"
        # the arithmetic, compiled (proxy/scheduler/ttl_answers.py): the plugin only unpacks the call
        self.answers = TtlAnswers(
            params.ttl_quantile,
            params.max_ttl_s,
            params.min_return_probability,
            params.cold_ttl_s,
            params.long_gap_s,
            params.priority_base_s,
            params.priority_levels,
            params.release_answer_gap_s,
        )

    @property
    def predictor(self) -> Predictor | None:
        return self.answers.predictor

    def bind_predictor(self, predictor: Predictor) -> None:
        self.answers.predictor = predictor

    def retain_ttl_s(self, req: RequestInfo, replica_id: ReplicaId) -> float | None:
        return self.answers.retain_ttl_s(req.request_id, req.session_id)

    def retain_priority(self, req: RequestInfo, replica_id: ReplicaId) -> int | None:
        return self.answers.retain_priority(req.request_id)

    def release_after(self, req: RequestInfo, replica_id: ReplicaId, usage: Usage) -> bool:
        return self.answers.release_after(req.session_id, usage.finish_reason, usage.tool_names)
