"""Plugin registry and named routing policies.

A policy is a `PolicySpec`: which filters, weighted scorers and picker to chain, each with its parameters.
Named presets cover the policies the project compares; configuration may also give a spec of its own. Bad
configuration fails when the policy is built, naming the plugin, and never falls back silently.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from proxy.scheduler.admission import AdmissionSpec
from proxy.scheduler.framework import Filter, Picker, Retention, RoutingPolicy, Scorer
from proxy.scheduler.plugin_spec import PLUGIN_TYPES, ConfigError, PluginSpec, _build_plugin, build_plugin
from proxy.scheduler.release import ReleaseQueueSpec
from proxy.scheduler.stealing import StealingSpec

__all__ = [
    "PLUGIN_TYPES",
    "PRESETS",
    "ConfigError",
    "PluginSpec",
    "PolicySpec",
    "build_plugin",
    "build_policy",
    "with_preset",
]


class PolicySpec(msgspec.Struct, forbid_unknown_fields=True):
    picker: PluginSpec
    filters: list[PluginSpec] = msgspec.field(default_factory=list)
    scorers: list[PluginSpec] = msgspec.field(default_factory=list)
    retention: PluginSpec | None = None
    # Workflow scheduling (the `saga` policy): admission by KV working set, and the proxy's release queue
    # (its order and gate); the serve config's own `queue` replaces this one when given.
    admission: AdmissionSpec | None = None
    queue: ReleaseQueueSpec | None = None
    # Pass vLLM a request priority (retentions take their call's): "first-call" puts a workflow's later
    # calls before new work; "workflow-age" every call of an older workflow before newer ones'.
    prioritize: Literal["off", "first-call", "workflow-age"] = "off"
    # Idle replicas take bound workflows whose replica makes them wait longer than a recompute costs.
    stealing: StealingSpec | None = None


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
    # SAGA: workflow-atomic scheduling. A new workflow waits in the proxy until a replica has room for its
    # predicted KV footprint (admission), binds there by prefix overlap, KV headroom and load, and keeps
    # its KV across tool calls for as long as the learned graph predicts (retention); its later calls go
    # before new work in vLLM's queue, so new work cannot break a workflow in flight (priority).
    "saga": PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[
            PluginSpec("session-affinity-scorer", 4.0),
            # light: every replica soon holds the shared system prompt, and a heavier weight piles new
            # workflows onto the replicas that served their agent type first
            PluginSpec("prefix-cache-scorer", 0.2),
            PluginSpec("kv-headroom-scorer", 0.5),
            PluginSpec("least-request-scorer", 1.0),
        ],
        # retentions rank with their workflow (its vLLM priority): only older workflows' calls break them
        retention=PluginSpec("predicted-ttl-retention", params={"priority_base_s": None}),
        # a between-calls hold that costs waiting workflows more than the re-prefill it saves goes at once
        admission=AdmissionSpec(order="least-work", hold_price=1.0),
        prioritize="workflow-age",
        stealing=StealingSpec(rebalance_above=1.0),
    ),
    # Session affinity plus a KV retention TTL sized from the learned Agent Execution Graph (predictor/).
    "predicted-ttl": PolicySpec(
        picker=PluginSpec("max-score-picker"),
        scorers=[PluginSpec("session-affinity-scorer", 1.0), PluginSpec("least-request-scorer", 0.5)],
        retention=PluginSpec("predicted-ttl-retention"),
    ),
}


DEFAULT_PRESET = "saga"  # `saga serve`'s policy when none is named (proxy/config.py)

# The parts of a policy that are settings of one mechanism: given beside a `preset`, merged into the preset's
_MERGED_PARTS = ("admission", "queue", "stealing")


def with_preset(policy: Mapping[str, Any]) -> dict[str, Any]:
    """A policy written as `{preset: NAME, ...}` (a configuration file's): the preset's fields, replaced by
    those given, except that the `admission`, `queue` and `stealing` mappings given are merged field by field
    into the preset's (`{preset: saga, admission: {max_wait_s: 60}}` changes that one setting; `admission:
    null` switches it off). Without `preset` or `picker`, the default preset's (`saga`): `{admission:
    {max_wait_s: 60}}` is read as above. A policy with a `picker` and no `preset` is written whole: returned
    as given."""
    if "preset" not in policy:
        if "picker" in policy:
            return dict(policy)
        policy = {"preset": DEFAULT_PRESET, **policy}
    name = policy["preset"]
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(
            f"policy.preset: unknown preset {name!r}; known: {', '.join(PRESETS)}", key="policy"
        )
    merged: dict[str, Any] = msgspec.to_builtins(PRESETS[name])
    for key, value in policy.items():
        if key == "preset":
            continue
        base = merged.get(key)
        if key in _MERGED_PARTS and isinstance(value, Mapping) and isinstance(base, dict):
            merged[key] = {**base, **value}
        else:
            merged[key] = value
    return merged


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
    if spec.admission is not None:
        spec.admission.validate()
    if spec.queue is not None:
        spec.queue.validate()
    if spec.stealing is not None:
        spec.stealing.validate()
    built = RoutingPolicy(name, filters, scorers, picker, retention)
    built.admission, built.queue, built.prioritize = spec.admission, spec.queue, spec.prioritize
    built.stealing = spec.stealing
    return built
