"""The `saga` policy with one mechanism off, by name, for ablation tables in `saga bench des` (and the grid).

Contract: `policy_for(name)` is a preset's name unchanged, or for `saga-no-<mechanism>` the `saga` preset's
spec with that mechanism switched off exactly as a user would in the config (docs/saga-policy.md), and for
`saga-arrival-order` / `saga-measured-room` / `saga-hold-always` one admission setting changed, and for
`saga-gpu-hold` the retention held on the GPU on replicas with a CPU KV tier too; unknown names raise
ValueError listing the known ones. `saga-no-admission` also turns work stealing off: stealing
moves admitted workflows, so it needs admission's table of them. Any of these names + `+kv-events` is
the same policy with the core told what the replicas' KV events say each caches of a session (the
cluster's `kv_events`: `cluster_options(name)`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from proxy.scheduler import PRESETS, PolicySpec
from proxy.scheduler.registry import PluginSpec

_SAGA = PRESETS["saga"]
assert _SAGA.admission is not None and _SAGA.retention is not None and _SAGA.stealing is not None

ABLATIONS: dict[str, dict[str, Any]] = {
    "saga-no-admission": {"admission": None, "stealing": None},
    "saga-no-priority": {"prioritize": "off"},
    "saga-no-retention": {"retention": None},
    "saga-no-stealing": {"stealing": None},
    # calls of one workflow in parallel all on its replica, room or not (the preset spills them)
    "saga-no-spill": {"stealing": msgspec.structs.replace(_SAGA.stealing, spill=False)},
    # placement as session-affinity's: the bound replica, else the least loaded
    "saga-no-placement": {
        "scorers": [PluginSpec("session-affinity-scorer", 1.0), PluginSpec("least-request-scorer", 0.5)]
    },
    # waiting workflows admitted first come, first served (the preset: least expected work first)
    "saga-arrival-order": {"admission": msgspec.structs.replace(_SAGA.admission, order="arrival")},
    # retentions held to their TTL even when the answer hands back to a person
    "saga-no-early-release": {
        "retention": PluginSpec(
            _SAGA.retention.type, params={**_SAGA.retention.params, "release_answer_gap_s": None}
        )
    },
    # on replicas with a CPU KV tier, hold retentions on the GPU as elsewhere (the preset lets them go there)
    "saga-gpu-hold": {
        "retention": PluginSpec(_SAGA.retention.type, params={**_SAGA.retention.params, "cpu_tier": "hold"})
    },
    # the option the preset leaves off: also admit where the reported KV is free and nothing waits
    "saga-measured-room": {"admission": msgspec.structs.replace(_SAGA.admission, measured_room=True)},
    # every between-calls hold kept, whatever it costs waiting work (the preset prices it: `hold_price`)
    "saga-hold-always": {"admission": msgspec.structs.replace(_SAGA.admission, hold_price=None)},
}


# Suffixes that run a policy on a cluster set up otherwise (loadtests/des/result.py ClusterConfig).
VARIANTS: dict[str, dict[str, Any]] = {"+kv-events": {"kv_events": True}}


def known_policies() -> list[str]:
    return [*PRESETS, *ABLATIONS]


def split_variant(name: str) -> tuple[str, dict[str, Any]]:
    """The policy a contender name runs, and the cluster options its suffix (if any) sets."""
    for suffix, options in VARIANTS.items():
        if name.endswith(suffix):
            return name[: -len(suffix)], options
    return name, {}


def is_known(name: str) -> bool:
    return split_variant(name)[0] in known_policies()


def cluster_options(name: str) -> dict[str, Any]:
    return split_variant(name)[1]


def policy_for(name: str) -> str | PolicySpec:
    name = split_variant(name)[0]
    if name in PRESETS:
        return name
    if name in ABLATIONS:
        return msgspec.structs.replace(PRESETS["saga"], **ABLATIONS[name])
    raise ValueError(f"unknown policy {name!r}; known: {', '.join(known_policies())}")
