"""Ablation names: the saga preset with exactly one mechanism switched off, as a user would in the config."""

from __future__ import annotations

import msgspec
import pytest

from loadtests.bench.ablation import ABLATIONS, known_policies, policy_for
from proxy.scheduler import PRESETS, PolicySpec, build_policy


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_each_ablation_switches_off_only_its_mechanisms(name: str) -> None:
    spec = policy_for(name)
    assert isinstance(spec, PolicySpec)
    build_policy(spec)  # a valid policy
    saga, ablated = msgspec.to_builtins(PRESETS["saga"]), msgspec.to_builtins(spec)
    changed = {key for key in saga if saga.get(key) != ablated.get(key)}
    assert changed == set(ABLATIONS[name])


def test_presets_pass_through_and_unknown_names_are_refused() -> None:
    assert policy_for("session-affinity") == "session-affinity"
    assert set(PRESETS) < set(known_policies())
    with pytest.raises(ValueError, match="saga-no-admission"):
        policy_for("saga-no-such-thing")
