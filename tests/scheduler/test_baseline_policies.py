"""The baseline policies the harness compares: llm-d's prefix-load, SGLang's cache-aware, Continuum's TTL."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from proxy.scheduler import (
    ConfigError,
    Dispatch,
    PolicySpec,
    ReplicaStats,
    RequestInfo,
    SchedulerCore,
    build_policy,
)
from proxy.scheduler.prefix_index import PrefixIndex
from proxy.scheduler.registry import PluginSpec

REPLICAS = ["r0", "r1", "r2", "r3"]
_ids = itertools.count()


def core_for(policy: str | PolicySpec, seed: int = 0) -> SchedulerCore:
    return SchedulerCore(REPLICAS, build_policy(policy, seed=seed), clock=lambda: 0.0)


def call(session: str, prefix: tuple[int, ...]) -> RequestInfo:
    return RequestInfo(request_id=f"q{next(_ids)}", session_id=session, arrived_at=0.0, prefix_hashes=prefix)


def route(core: SchedulerCore, req: RequestInfo, finish: bool = True) -> Dispatch:
    (decision,) = core.request_arrived(req)
    assert isinstance(decision, Dispatch)
    if finish:
        core.request_finished(req.request_id)
    return decision


def test_prefix_index_matches_leading_chunks_and_forgets_least_recent() -> None:
    index = PrefixIndex(capacity_per_replica=4)
    index.insert((1, 2, 3), "a")
    index.insert((1, 2, 9), "b")
    assert index.matches((1, 2, 3, 4)) == {"a": 3, "b": 2}
    assert index.matches((7, 1, 2)) == {}  # only a leading run counts
    index.insert((5, 6), "a")  # 5 chunks on "a": the least recent (1) goes
    assert index.size("a") == 4
    assert index.matches((1, 2, 3)) == {"b": 2}
    index.forget_replica("b")
    assert index.matches((1, 2)) == {}


def test_prefix_load_follows_the_prefix_and_balances_new_prompts() -> None:
    core = core_for("prefix-load")
    home = route(core, call("s", (1, 2, 3))).replica_id
    assert route(core, call("s", (1, 2, 3, 4))).replica_id == home
    # A prompt sharing nothing goes to the shortest queue: make every replica but one busy.
    for rid in REPLICAS:
        core.replica_stats(ReplicaStats(rid, waiting=0 if rid == "r2" else 5))
    assert route(core, call("t", (40, 41))).replica_id == "r2"


def test_prefix_load_leaves_a_cached_replica_whose_queue_is_long_for_a_short_match() -> None:
    core = core_for("prefix-load")
    home = route(core, call("s", (1, 2, 3, 4, 5, 6))).replica_id
    for rid in REPLICAS:
        core.replica_stats(ReplicaStats(rid, waiting=9 if rid == home else 0))
    # One chunk of six matched: 3 x 1/6 does not outweigh the queue scorer's 2.
    assert route(core, call("t", (1, 50, 51, 52, 53, 54))).replica_id != home
    # The whole prompt matched: 3 x 1.0 does.
    assert route(core, call("s", (1, 2, 3, 4, 5, 6, 7))).replica_id == home


def test_prefix_scores_take_the_replicas_word_where_their_kv_events_give_it() -> None:
    """The estimate says the session's home holds its whole prompt; the home's KV events say it evicted
    it: prefix-load then goes by load, as for a prompt cached nowhere."""
    core = core_for("prefix-load")
    prefix = (1, 2, 3, 4, 5, 6)
    home = route(core, call("s", prefix)).replica_id
    idle = next(rid for rid in REPLICAS if rid != home)
    for rid in REPLICAS:
        core.replica_stats(ReplicaStats(rid, waiting=4 if rid == home else (0 if rid == idle else 1)))

    def again(held: int) -> RequestInfo:  # the session's next call, its home's events saying `held`
        return msgspec.structs.replace(call("s", prefix), prompt_tokens=1_536, kv_resident={home: held})

    assert route(core, again(1_536)).replica_id == home
    assert route(core, again(0)).replica_id == idle


def test_cache_aware_follows_a_long_match_else_the_emptiest_cache() -> None:
    core = core_for("cache-aware")
    first = route(core, call("s", (1, 2, 3, 4))).replica_id
    assert route(core, call("s", (1, 2, 3, 4, 5))).replica_id == first
    # A new prompt matching 1 chunk of 10 (below the 0.3 threshold) goes to a replica with an empty index.
    other = route(core, call("t", (1, *range(100, 109)))).replica_id
    assert other != first


def test_cache_aware_goes_to_the_idlest_replica_when_load_is_imbalanced() -> None:
    spec = PolicySpec(picker=PluginSpec("cache-aware-picker", params={"balance_abs_threshold": 2}))
    core = core_for(spec)
    home = route(core, call("s", (1, 2, 3))).replica_id
    for i in range(3):  # three calls in flight on the session's home replica
        assert route(core, call("s", (1, 2, 3, 10 + i)), finish=False).replica_id == home
    assert route(core, call("s", (1, 2, 3, 20))).replica_id != home


def test_continuum_ttl_asks_for_retention_and_session_affinity_does_not() -> None:
    assert route(core_for("continuum-ttl"), call("s", ())).retain_ttl_s == 10.0
    assert route(core_for("session-affinity"), call("s", ())).retain_ttl_s is None
    spec = PolicySpec(
        picker=PluginSpec("round-robin-picker"),
        retention=PluginSpec("fixed-ttl-retention", params={"ttl_s": 3.5}),
    )
    assert route(core_for(spec), call("s", ())).retain_ttl_s == 3.5


def test_continuum_ttl_leaves_retention_priorities_equal_and_a_configured_one_is_dispatched() -> None:
    assert route(core_for("continuum-ttl"), call("s", ())).retain_priority is None
    assert route(core_for("session-affinity"), call("s", ())).retain_priority is None
    spec = PolicySpec(
        picker=PluginSpec("round-robin-picker"),
        retention=PluginSpec("fixed-ttl-retention", params={"ttl_s": 3.5, "priority": -2}),
    )
    decision = route(core_for(spec), call("s", ()))
    assert (decision.retain_ttl_s, decision.retain_priority) == (3.5, -2)


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        (PluginSpec("fixed-ttl-retention", params={"ttl_s": 0}), "ttl_s must be > 0"),
        (PluginSpec("queue-scorer"), "is not a retention"),
        (PluginSpec("fixed-ttl-retention", params={"ttl": 5}), "bad params"),
    ],
)
def test_bad_retention_configuration_names_the_plugin(retention: PluginSpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_policy(PolicySpec(picker=PluginSpec("round-robin-picker"), retention=retention))
