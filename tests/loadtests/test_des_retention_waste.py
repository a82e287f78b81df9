"""The wasted-retention figures of a discrete-event run: per replica, summed in KvFigures and the bench
metrics, and zero for a policy that retains nothing."""

from __future__ import annotations

import pytest

from loadtests.bench.des import contender_run, kv_line
from loadtests.des.cluster import run_cluster
from loadtests.workloads.catalog import generate


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
