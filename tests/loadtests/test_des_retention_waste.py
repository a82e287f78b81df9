"""The wasted-retention figures of a discrete-event run: per replica, summed in KvFigures and the bench
metrics, and zero for a policy that retains nothing."""

from __future__ import annotations

import msgspec
import pytest

from loadtests.bench.des import contender_run, kv_line
from loadtests.des.cluster import run_cluster
from loadtests.workloads.catalog import generate
from proxy.scheduler.registry import PRESETS, PluginSpec


def test_retained_block_seconds_split_into_used_and_wasted_and_add_up() -> None:
    tasks = generate("interactive", 12, seed=3)
    result = run_cluster(tasks, replicas=2, policy="continuum-ttl", concurrency=6, kv_scale=0.3)
    replicas = result.replicas
    assert sum(r.retentions_used for r in replicas) > 0  # sessions came back to their retained KV
    assert sum(r.retentions_expired for r in replicas) > 0  # and some did not within the TTL
    kv = result.kv_figures()
    assert kv.retained_block_s_used == pytest.approx(sum(r.retained_block_s_used for r in replicas))
    parts = ("expired", "dropped", "released", "live_at_end")
    wasted = sum(getattr(r, f"retained_block_s_{p}") for r in replicas for p in parts)
    assert kv.retained_block_s_wasted == pytest.approx(wasted) and wasted > 0
    assert kv.retained_block_s_expired <= kv.retained_block_s_wasted
    assert sum(r.retained_block_s_released for r in replicas) == 0  # no client released anything
    fraction = kv.retained_wasted_fraction
    assert fraction is not None and 0 < fraction < 1
    assert "wasted" in kv_line(kv)
    assert contender_run(result).kv == kv  # what the bench metrics and JSON carry


def test_a_policy_that_retains_nothing_wastes_nothing() -> None:
    tasks = generate("interactive", 6, seed=3)
    kv = run_cluster(tasks, replicas=2, policy="session-affinity", concurrency=6, kv_scale=0.3).kv_figures()
    assert kv.retained_block_s_used == kv.retained_block_s_wasted == 0
    assert kv.retained_wasted_fraction is None and "retained" not in kv_line(kv)


def test_saga_releases_kv_when_the_agent_hands_back_to_the_person() -> None:
    # Person-driven sessions: after an answer without a tool call the person reads and types for minutes.
    # `saga` releases that retention at once (POST /saga/v1/release in the DES) instead of holding it to
    # its TTL, so less KV expires unused than with the release switched off, on the same seeded run.
    tasks = generate("interactive", 24, seed=3)
    on = run_cluster(tasks, replicas=2, policy="saga", concurrency=8, kv_scale=0.3)
    params = {"release_answer_gap_s": None, "priority_base_s": None}
    off_spec = PRESETS["saga"]
    assert off_spec.retention is not None
    off_spec = msgspec.structs.replace(off_spec, retention=PluginSpec(off_spec.retention.type, params=params))
    off = run_cluster(tasks, replicas=2, policy=off_spec, concurrency=8, kv_scale=0.3)
    # (released at the instant it was made, a retention books no block-seconds: the waste just goes away)
    assert sum(r.retentions_expired for r in on.replicas) < sum(r.retentions_expired for r in off.replicas)
    assert on.kv_figures().retained_block_s_wasted < off.kv_figures().retained_block_s_wasted
