"""The plugins' parameters: msgspec Structs, kept apart from the plugins themselves.

The plugins and their framework are compiled with mypyc (setup.py) and a msgspec Struct cannot live in a
compiled module (mypyc rewrites its annotations and its class checks), so each plugin's `Params` is here,
under the plugin's module name, and the plugin module names it as its `Params`.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class PluginParams(msgspec.Struct, forbid_unknown_fields=True):
    """Base of every plugin's parameters: unknown fields are a configuration error."""


# proxy/scheduler/plugins/cache_aware.py
class CacheAwareParams(PluginParams):
    cache_threshold: float = 0.3
    balance_abs_threshold: int = 64
    balance_rel_threshold: float = 1.5
    capacity_chunks: int = 1680


# proxy/scheduler/plugins/engine_waiting_gate.py
class EngineWaitingParams(PluginParams):
    max_waiting: int = 0  # room while the engine has at most this many calls waiting
    max_in_flight: int = 64


# proxy/scheduler/plugins/fixed_ttl.py
class FixedTtlParams(PluginParams):
    ttl_s: float = 10.0
    priority: int | None = None


# proxy/scheduler/plugins/max_in_flight_gate.py
class MaxInFlightParams(PluginParams):
    max_in_flight: int = 8


# proxy/scheduler/plugins/predicted_ttl.py
class PredictedTtlParams(PluginParams):
    ttl_quantile: float = 0.95
    max_ttl_s: float = 300.0
    min_return_probability: float = 0.2
    cold_ttl_s: float | None = None
    long_gap_s: float | None = 60.0
    priority_base_s: float | None = 1.0
    priority_levels: int = 8
    release_answer_gap_s: float | None = 5.0
    cpu_tier: Literal["offload", "hold"] = "offload"


# proxy/scheduler/plugins/prefix_cache.py
class PrefixCacheParams(PluginParams):
    capacity_chunks: int = 1680
