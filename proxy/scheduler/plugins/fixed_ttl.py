"""`fixed-ttl-retention`: asks the replica to keep every call's KV for a fixed TTL after it ends.

Continuum's mechanism (arXiv 2511.02230): pin a call's KV on its GPU for a time-to-live while the agent runs
its tool, so the next call finds its prefix even under memory pressure. The TTL is one number for all tools;
SAGA's own retention sizes it per predicted return time instead. `priority` (optional) is the retention's
priority under contract v2 (docs/retention-api.md); unset, the replica uses the call's own priority, so with
every call equal a retention holds against new work until its TTL ends (Continuum's FCFS semantics).
"""

from __future__ import annotations

import random

from proxy.scheduler.framework import PluginParams, Retention
from proxy.scheduler.plugin_params import FixedTtlParams
from proxy.scheduler.types import ReplicaId, RequestInfo


class FixedTtlRetention(Retention):
    """Contract: `ttl_s` for every call (must be > 0), at `priority` (None: the call's own)."""

    type_name = "fixed-ttl-retention"
    Params = FixedTtlParams

    def __init__(self, params: PluginParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        assert isinstance(params, FixedTtlParams)
        if params.ttl_s <= 0:
            raise ValueError(f"fixed-ttl-retention: ttl_s must be > 0, got {params.ttl_s}")
        self.ttl_s = params.ttl_s
        self.priority = params.priority

    def retain_ttl_s(self, req: RequestInfo, replica_id: ReplicaId) -> float | None:
        return self.ttl_s

    def retain_priority(self, req: RequestInfo, replica_id: ReplicaId) -> int | None:
        return self.priority
