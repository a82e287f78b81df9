"""One simulated vLLM server's parts: engine, its asyncio driver and metrics, and the names it answers to."""

from __future__ import annotations

from simulator.cost_model import Profile
from simulator.driver import ReplicaDriver
from simulator.engine import Engine
from simulator.metrics import ReplicaMetrics
from simulator.tokenizer import Tokenizer


class Replica:
    """One simulated vLLM server: engine, its driver and metrics, and the names it answers to."""

    def __init__(
        self,
        name: str,
        *,
        profile: Profile,
        model: str,
        time_scale: float,
        scheduling_policy: str = "priority",
        tokenizer: Tokenizer | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer()
        self.engine = Engine(profile, scheduling_policy=scheduling_policy, tokenizer=self.tokenizer)
        self.metrics = ReplicaMetrics(self.engine, model_name=model)
        self.driver = ReplicaDriver(self.engine, time_scale=time_scale, on_output=self.metrics.observe)
