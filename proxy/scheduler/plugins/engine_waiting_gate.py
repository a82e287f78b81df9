"""`engine-waiting-gate`: a replica takes another held call while its engine queue is short.

Reads vLLM's `num_requests_waiting` as last scraped (it lags by a scrape interval), so `max_in_flight` also
caps what this proxy has on the replica: between two scrapes the gate cannot overfill it.
"""

from __future__ import annotations

import random

from proxy.scheduler.framework import Gate, PluginParams
from proxy.scheduler.plugin_params import EngineWaitingParams
from proxy.scheduler.types import ReplicaView


class EngineWaitingGate(Gate):
    """Contract: room iff waiting <= max_waiting and in_flight < max_in_flight."""

    type_name = "engine-waiting-gate"
    Params = EngineWaitingParams

    def __init__(self, params: PluginParams, rng: random.Random) -> None:
        super().__init__(params, rng)
        assert isinstance(params, EngineWaitingParams)
        if params.max_waiting < 0 or params.max_in_flight < 1:
            raise ValueError(f"{self.type_name}: needs max_waiting >= 0 and max_in_flight >= 1")
        self.max_waiting, self.max_in_flight = params.max_waiting, params.max_in_flight

    def has_room(self, replica: ReplicaView) -> bool:
        return replica.waiting <= self.max_waiting and replica.in_flight < self.max_in_flight
