"""The discrete-event cluster with `kv_events`: each call tells the core what the replicas its session went
to still cache of its prompt, as a proxy subscribed to the replicas' KV events knows it
(proxy/kv_residency.py)."""

from __future__ import annotations

from fairness import TenantsConfig
from loadtests.bench.ablation import cluster_options, is_known, policy_for
from loadtests.des.cluster import Cluster
from loadtests.des.result import ClusterConfig
from loadtests.workloads.catalog import generate
from proxy.scheduler import RequestInfo, build_policy
from simulator.cost_model import get_profile
from tests.recording_core import ArrivalsCore


def arrivals(kv_events: bool, kv_blocks: int | None = None) -> list[RequestInfo]:
    tasks = generate("swe", 6, seed=2)
    config = ClusterConfig(
        replicas=2, policy="session-affinity", concurrency=6, kv_events=kv_events, kv_blocks=kv_blocks
    )
    cluster = Cluster(tasks, config)
    core = ArrivalsCore(
        cluster.replicas, build_policy("session-affinity", seed=0), cluster.queue, tenants=TenantsConfig()
    )
    cluster.core = core
    result = cluster.run()
    assert all(not c.error for t in result.tasks for c in t.calls)
    return core.arrivals


def test_each_call_carries_what_its_replicas_cache_of_it() -> None:
    block = get_profile("llama3-8b-h100").block_size
    seen: set[str] = set()
    later = 0
    for info in arrivals(kv_events=True):
        assert info.kv_resident is not None
        if info.session_id not in seen:  # sent nowhere yet
            assert info.kv_resident == {}
            seen.add(info.session_id)
            continue
        ((replica, held),) = info.kv_resident.items()  # session-affinity: one replica all along
        assert replica.startswith("replica-")
        assert held % block == 0 and 0 < held <= info.prompt_tokens
        later += 1
    assert later > 20


def test_a_replica_that_evicted_a_session_says_so() -> None:
    """A KV too small for the six agents at once (contexts up to 117k tokens; 128k per replica): some calls
    find less than their history cached."""
    evicted = [
        i
        for i in arrivals(kv_events=True, kv_blocks=8_000)
        if i.kv_resident and 2 * max(i.kv_resident.values()) < i.prompt_tokens
    ]
    assert evicted


def test_without_kv_events_the_core_is_told_nothing() -> None:
    assert all(info.kv_resident is None for info in arrivals(kv_events=False))


def test_bench_names_run_a_policy_with_kv_events() -> None:
    assert is_known("saga+kv-events") and is_known("prefix-load+kv-events") and is_known("saga")
    assert not is_known("nonsense+kv-events")
    assert policy_for("saga+kv-events") == "saga" and cluster_options("saga+kv-events") == {"kv_events": True}
    assert cluster_options("saga") == {}
