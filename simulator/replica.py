"""One simulated vLLM server's parts: engine, its asyncio driver and metrics, and the names it answers to.

KV events (optional): with `kv_events_endpoint` set, `open_kv_events` (called when the server starts) opens
a publisher on it (simulator.kv_publisher) and hooks it to the block pool; `close_kv_events` undoes that.
"""

from __future__ import annotations

import msgspec

from simulator.cost_model import Profile
from simulator.driver import ReplicaDriver
from simulator.engine import Engine
from simulator.kv_publisher import KvEventPublisher
from simulator.metrics import ReplicaMetrics
from simulator.tokenizer import Tokenizer


class Replica:
    """One simulated vLLM server: engine, its driver and metrics, and the names it answers to. `hash_algo` and
    `num_gpu_blocks` are vLLM's --prefix-caching-hash-algo and --num-gpu-blocks-override (the profile's KV
    capacity when None); `kv_offload_gib` its --kv-offloading-size (native CPU offload, None: off)."""

    def __init__(
        self,
        name: str,
        *,
        profile: Profile,
        model: str,
        time_scale: float,
        scheduling_policy: str = "priority",
        tokenizer: Tokenizer | None = None,
        kv_events_endpoint: str | None = None,
        hash_algo: str = "sha256",
        num_gpu_blocks: int | None = None,
        kv_offload_gib: float | None = None,
    ) -> None:
        if num_gpu_blocks is not None:
            # vLLM's --num-gpu-blocks-override: N blocks of which block 0 is vLLM's null block, N - 1 usable
            if num_gpu_blocks < 2:
                raise ValueError(f"num_gpu_blocks must be at least 2, got {num_gpu_blocks}")
            usable = (num_gpu_blocks - 1) * profile.block_size
            # and, as a vLLM user must when one max-length request no longer fits, a lower --max-model-len
            max_len = min(profile.max_model_len, usable)
            profile = msgspec.structs.replace(profile, kv_capacity_tokens=usable, max_model_len=max_len)
        self.name = name
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else Tokenizer()
        self.engine = Engine(
            profile,
            scheduling_policy=scheduling_policy,
            hash_algo=hash_algo,
            tokenizer=self.tokenizer,
            kv_offload_gib=kv_offload_gib,
        )
        self.metrics = ReplicaMetrics(self.engine, model_name=model)
        self.driver = ReplicaDriver(self.engine, time_scale=time_scale, on_output=self.metrics.observe)
        self.kv_events_endpoint = kv_events_endpoint
        self.kv_publisher: KvEventPublisher | None = None

    def open_kv_events(self) -> None:
        """Start publishing KV events if an endpoint was given (raises ValueError if it cannot be used)."""
        if self.kv_events_endpoint is None or self.kv_publisher is not None:
            return
        self.kv_publisher = KvEventPublisher(self.kv_events_endpoint)
        self.engine.pool.kv_event_sink = self.kv_publisher.emit

    def close_kv_events(self) -> None:
        publisher, self.kv_publisher = self.kv_publisher, None
        if publisher is not None:
            self.engine.pool.kv_event_sink = None
            publisher.close()
