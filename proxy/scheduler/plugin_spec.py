"""The plugin table and how one plugin is built from its spec.

Every plugin type the project ships is listed in `PLUGIN_TYPES` by its kebab-case `type_name`. Bad
configuration fails when the plugin is built, naming it (`ConfigError`), and never falls back silently.
"""

from __future__ import annotations

import random
from typing import Any, TypeVar

import msgspec

from proxy.scheduler.framework import Plugin
from proxy.scheduler.plugins.cache_aware import CacheAwarePicker
from proxy.scheduler.plugins.engine_waiting_gate import EngineWaitingGate
from proxy.scheduler.plugins.fixed_ttl import FixedTtlRetention
from proxy.scheduler.plugins.kv_headroom import KvHeadroomScorer
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
        KvHeadroomScorer,
        FixedTtlRetention,
        MaxInFlightGate,
        EngineWaitingGate,
        PredictedTtlRetention,
    )
}


class ConfigError(ValueError):
    """A policy or plugin configuration that cannot be built; the message names the culprit. `key`: the
    configuration key it is about where the message does not start with it (`saga serve` names the
    variable a refused value came from: proxy/serve_options.py)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class PluginSpec(msgspec.Struct, forbid_unknown_fields=True):
    type: str
    weight: float = 1.0
    params: dict[str, Any] = msgspec.field(default_factory=dict)


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
