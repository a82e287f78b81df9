"""`max-in-flight-gate`: a replica takes another held call while fewer than `max_in_flight` are on it.

The proxy's own in-flight count is exact and current, so the gate never overfills a replica between two
scrapes; it keeps the engine's batch small enough that released work runs promptly, and leaves the rest
waiting in the proxy, where the fair order decides what goes next.
"""

from __future__ import annotations

import random

from proxy.scheduler.framework import Gate, PluginParams
from proxy.scheduler.plugin_params import MaxInFlightParams
from proxy.scheduler.types import ReplicaView


class MaxInFlightGate(Gate):
    """Contract: room iff in_flight < max_in_flight (>= 1)."""

    type_name = "max-in-flight-gate"
    Params = MaxInFlightParams

    def __init__(self, params: PluginParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        assert isinstance(params, MaxInFlightParams)
        if params.max_in_flight < 1:
            raise ValueError(f"{self.type_name}: max_in_flight must be >= 1, got {params.max_in_flight}")
        self.limit = params.max_in_flight

    def has_room(self, replica: ReplicaView) -> bool:
        return replica.in_flight < self.limit
