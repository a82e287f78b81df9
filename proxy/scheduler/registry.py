"""Plugin registry and named routing policies.

A policy is a `PolicySpec`: which filters, weighted scorers and picker to chain, each with its parameters.
Named presets cover the policies the project compares; configuration may also give a spec of its own. Bad
configuration fails when the policy is built, naming the plugin, and never falls back silently.
"""

from __future__ import annotations

import random
from typing import Any, TypeVar

import msgspec

from proxy.scheduler.framework import Filter, Picker, Plugin, Retention, RoutingPolicy, Scorer
from proxy.scheduler.plugins.cache_aware import CacheAwarePicker
from proxy.scheduler.plugins.engine_waiting_gate import EngineWaitingGate
from proxy.scheduler.plugins.fixed_ttl import FixedTtlRetention
from proxy.scheduler.plugins.kv_utilization import KvUtilizationScorer
from proxy.scheduler.plugins.least_request import LeastRequestScorer
from proxy.scheduler.plugins.max_in_flight_gate import MaxInFlightGate
from proxy.scheduler.plugins.max_score import MaxScorePicker
from proxy.scheduler.plugins.power_of_two import PowerOfTwoPicker
from proxy.scheduler.plugins.predicted_ttl import PredictedTtlRetention
from proxy.scheduler.plugins.prefix_cache import PrefixCacheScorer
from proxy.scheduler.plugins.queue_depth import QueueScorer
from proxy.scheduler.plugins.round_robin import RoundRobinPicker
from proxy.scheduler.plugins.session_affinity import SessionAffinityScorer

P = TypeVar("P", bound=Plugin)

PLUGIN_TYPES: dict[str, type[Plugin]] = {
    cls.type_name: cls
    for cls in (
        RoundRobinPicker,
        MaxScorePicker,
        PowerOfTwoPicker,
        CacheAwarePicker,
        LeastRequestScorer,
        SessionAffinityScorer,
        PrefixCacheScorer,
        QueueScorer,
        KvUtilizationScorer,
        FixedTtlRetention,
        MaxInFlightGate,
        EngineWaitingGate,
        PredictedTtlRetention,
    )
}


class ConfigError(ValueError):
    """A policy or plugin configuration that cannot be built; the message names the culprit."""


class PluginSpec(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    weight: float = 1.0
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class PolicySpec(msgspec.Struct, forbid_unknown_fields=True):
    picker: PluginSpec
    filters: list[PluginSpec] = msgspec.field(default_factory=list)
    scorers: list[PluginSpec] = msgspec.field(default_factory=list)
    retention: PluginSpec | None = None


PRESETS: dict[str, PolicySpec] = {
    # Calls in turn: scatters a session's calls over all replicas (the request-level baseline).
    "round-robin": PolicySpec(picker=PluginSpec("round-robin-picker")),
    # Least calls in flight, power of two choices.
    "least-request": PolicySpec(
        picker=PluginSpec("power-of-two-picker"), scorers=[PluginSpec("least-request-scorer")]
    ),
    # A session stays where its first call went; new sessions go to the least loaded replica. The load
    # weight is below the affinity weight, so load only decides between replicas a session is not bound to.
    "session-affinity": PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("session-affinity-scorer", 1.0), PluginSpec("least-request-scorer", 0.5)],
    ),
    # llm-d's default scorer mix: approximate prefix overlap (weight 3), queue depth and KV-cache
    # utilisation (weight 2 each), highest total wins.
    "prefix-load": PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[
            PluginSpec("prefix-cache-scorer", 3.0),
            PluginSpec("queue-scorer", 2.0),
            PluginSpec("kv-cache-utilization-scorer", 2.0),
        ],
    ),
    # SGLang router's cache-aware policy: longest cached prefix, shortest queue when load is imbalanced.
    "cache-aware": PolicySpec(picker=PluginSpec("cache-aware-picker")),
    # Continuum: session affinity plus a fixed KV retention TTL after each call.
    "continuum-ttl": PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("session-affinity-scorer", 1.0), PluginSpec("least-request-scorer", 0.5)],
        retention=PluginSpec("fixed-ttl-retention"),
    ),
    # Session affinity plus a KV retention TTL sized from the learned Agent Execution Graph (predictor/).
    "predicted-ttl": PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("session-affinity-scorer", 1.0), PluginSpec("least-request-scorer", 0.5)],
        retention=PluginSpec("predicted-ttl-retention"),
    ),
}


def _build_plugin(spec: PluginSpec, kind: type[P], rng: random.Random) -> P:
    cls = PLUGIN_TYPES.get(spec.type)
    if cls is None:
        raise ConfigError(f"unknown plugin type {spec.type!r}; known: {', '.join(sorted(PLUGIN_TYPES))}")
    if not issubclass(cls, kind):
        raise ConfigError(f"plugin {spec.type!r} is not a {kind.__name__.lower()}")
    if spec.weight < 0:
        raise ConfigError(f"plugin {spec.type!r}: weight must be >= 0, got {spec.weight}")
    try:
        params = msgspec.convert(spec.params, cls.Params)
    except msgspec.ValidationError as e:
        raise ConfigError(f"plugin {spec.type!r}: bad params: {e}") from e
    try:
        plugin = cls(params, rng)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    assert isinstance(plugin, kind)
    return plugin


def build_plugin(spec: PluginSpec, kind: type[P], rng: random.Random) -> P:
    """One plugin of base class `kind` from its spec (ConfigError naming it when it cannot be built)."""
    return _build_plugin(spec, kind, rng)


def build_policy(policy: str | PolicySpec, seed: int | None = None) -> RoutingPolicy:
    """A fresh policy (own plugin state) from a preset name or a spec; `seed` fixes its random choices."""
    if isinstance(policy, str):
        spec = PRESETS.get(policy)
        if spec is None:
            raise ConfigError(f"unknown policy {policy!r}; known: {', '.join(sorted(PRESETS))}")
        name = policy
    else:
        spec, name = policy, "custom"
    rng = random.Random(seed)
    filters = [_build_plugin(s, Filter, rng) for s in spec.filters]
    scorers = [(_build_plugin(s, Scorer, rng), s.weight) for s in spec.scorers]
    picker = _build_plugin(spec.picker, Picker, rng)
    retention = _build_plugin(spec.retention, Retention, rng) if spec.retention is not None else None
    return RoutingPolicy(name, filters, scorers, picker, retention)
