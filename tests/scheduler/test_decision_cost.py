"""The cheap paths of the scheduler's decisions choose exactly as the plain ones they replace.

Routing sums scorers' lists aligned with the candidates (not a dict per scorer), admission checks room in one
pass, the prefix index keeps a bit mask of replicas per chunk and `tick` reads only the expired head of the
session table: each is checked here against the plain computation on many random states, so a faster path
can never change a decision.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import pytest

from predictor import Predictor
from predictor.sharded import ShardedLru
from proxy.scheduler import PRESETS, PolicySpec, RequestInfo, SchedulerCore, build_policy
from proxy.scheduler.admission import AdmissionSpec, WorkflowAdmission
from proxy.scheduler.framework import PluginParams, RoutingPolicy, Scorer
from proxy.scheduler.prefix_index import PrefixIndex
from proxy.scheduler.registry import PluginSpec
from proxy.scheduler.types import ReplicaId, ReplicaView
from tests.clocks import Clock


def random_views(rng: random.Random, n: int) -> list[ReplicaView]:
    views = []
    for i in range(n):
        capacity = rng.choice((0, 16_384, 100_000))
        views.append(
            ReplicaView(
                f"r{i}",
                in_flight=rng.randrange(4),
                queued=rng.randrange(3),
                waiting=rng.randrange(3),
                running=rng.randrange(5),
                kv_usage=rng.choice((0.0, 1.0, 1.5, rng.random())),
                kv_capacity_tokens=capacity,
                reserved_tokens=rng.choice((0, rng.randrange(2 * capacity + 1))),
            )
        )
    return views


def random_request(rng: random.Random, k: int) -> RequestInfo:
    chunks = rng.randrange(0, 6)
    return RequestInfo(
        request_id=f"q{k}",
        session_id=f"s{rng.randrange(6)}",
        arrived_at=0.0,
        prompt_tokens=256 * chunks,
        prefix_hashes=tuple(rng.randrange(1, 4) * 10 + c for c in range(chunks)),
    )


def plain_route(policy: RoutingPolicy, req: RequestInfo, replicas: Sequence[ReplicaView]) -> ReplicaId | None:
    """Routing as it was: a dict of totals over every scorer's mapping, the picker's `pick`."""
    candidates: Sequence[ReplicaView] = replicas
    for f in policy.filters:
        candidates = f.filter(req, candidates)
        if not candidates:
            return None
    totals: dict[ReplicaId, float] = dict.fromkeys((r.replica_id for r in candidates), 0.0)
    for scorer, weight in policy.scorers:
        for replica_id, value in scorer.score(req, candidates).items():
            if replica_id in totals:
                totals[replica_id] += weight * value
    return plain_pick(policy, req, candidates, totals)


def plain_pick(
    policy: RoutingPolicy, req: RequestInfo, candidates: Sequence[ReplicaView], totals: dict[ReplicaId, float]
) -> ReplicaId:
    """The score-reading pickers as they were (the others ignore the scores)."""
    picker = policy.picker
    if picker.type_name == "max-score-picker":
        best = max(totals.get(r.replica_id, 0.0) for r in candidates)
        tied = [r.replica_id for r in candidates if totals.get(r.replica_id, 0.0) >= best - 1e-9]
        return tied[0] if len(tied) == 1 else picker.rng.choice(tied)
    if picker.type_name == "power-of-two-picker":
        if len(candidates) == 1:
            return candidates[0].replica_id
        a, b = picker.rng.sample(list(candidates), 2)
        return b.replica_id if totals[b.replica_id] > totals[a.replica_id] else a.replica_id
    return picker.pick(req, candidates, totals)


WEIGHTED = PolicySpec(
    picker=PluginSpec("power-of-two-picker"),
    scorers=[
        PluginSpec("queue-scorer", 1.5),
        PluginSpec("kv-cache-utilization-scorer", 0.0),  # weight 0: never asked
        PluginSpec("kv-headroom-scorer", 0.7),
        PluginSpec("prefix-cache-scorer", 0.3),
    ],
)


@pytest.mark.parametrize("policy", [*sorted(PRESETS), "weighted"])
def test_route_chooses_as_the_plain_per_replica_sum_does(policy: str) -> None:
    spec: str | PolicySpec = WEIGHTED if policy == "weighted" else policy
    fast, plain = build_policy(spec, seed=7), build_policy(spec, seed=7)  # same seeds: same random draws
    rng = random.Random(policy)
    for k in range(400):
        views = random_views(rng, rng.randrange(1, 9))
        req = random_request(rng, k)
        chosen = fast.route(req, views)
        assert chosen == plain_route(plain, req, views)
        assert chosen is not None
        for a, b in ((fast, chosen), (plain, chosen)):  # the same history: prefix indexes, affinity
            for plugin in a.plugins:
                plugin.on_dispatch(req, b)


def test_every_scorers_list_matches_its_mapping() -> None:
    scorers: list[Scorer] = [s for p in (*PRESETS.values(), WEIGHTED) for s, _ in build_policy(p).scorers]
    assert {s.type_name for s in scorers} >= {
        "session-affinity-scorer",
        "least-request-scorer",
        "prefix-cache-scorer",
        "queue-scorer",
        "kv-cache-utilization-scorer",
        "kv-headroom-scorer",
    }
    rng = random.Random(1)
    for k in range(300):
        views = random_views(rng, rng.randrange(0, 7))
        req = random_request(rng, k)
        for scorer in scorers:
            by_id: Mapping[ReplicaId, float] = scorer.score(req, views)
            each = scorer.score_each(req, views)
            assert list(each) == [by_id[r.replica_id] for r in views], scorer.type_name
            assert all(0.0 <= v <= 1.0 for v in each), scorer.type_name
            if views:  # build up affinity bindings and prefix indexes
                scorer.on_dispatch(req, views[0].replica_id)


def test_a_weight_zero_scorer_is_not_asked() -> None:
    built = build_policy(WEIGHTED, seed=0)

    class Refusing(Scorer):  # in the weight-0 scorer's place (compiled plugins take no patched methods)
        type_name = "refusing-scorer"

        def score_each(self, req: RequestInfo, replicas: Sequence[ReplicaView]) -> Sequence[float]:
            raise AssertionError("a weight-0 scorer was asked")

    refusing = Refusing(PluginParams(), random.Random(0))
    scorers = [(refusing if w == 0 else s, w) for s, w in built.scorers]
    assert refusing in [s for s, _ in scorers]
    policy = RoutingPolicy(built.name, built.filters, scorers, built.picker)
    assert policy.route(random_request(random.Random(0), 0), random_views(random.Random(0), 4)) is not None


def test_replicas_with_room_are_those_has_room_admits() -> None:
    rng = random.Random(2)
    for _ in range(300):
        views = random_views(rng, rng.randrange(0, 9))
        for view in views:
            view.healthy = rng.random() > 0.2
        limit = rng.choice((0.5, 1.0, 1.5))
        admission = WorkflowAdmission(AdmissionSpec(overcommit=limit), Predictor())
        admission.reserved = reserved = {v.replica_id: v.reserved_tokens for v in views if rng.random() > 0.1}
        footprint = rng.randrange(0, 200_000)
        prompt = rng.choice((0, rng.randrange(0, footprint + 1)))
        room = [v for v in views if v.healthy and admission.has_room(v, footprint, prompt)]
        # an empty replica too small for the footprint only while no replica has room under the limit
        under_limit = [
            v
            for v in room
            if v.kv_capacity_tokens <= 0
            or reserved.get(v.replica_id, 0) + footprint <= v.kv_capacity_tokens * limit
        ]
        assert admission.healthy_with_room(views, footprint, prompt) == (under_limit or room)


def test_tick_forgets_a_session_by_its_last_call_not_its_first() -> None:
    clock = Clock()
    core = SchedulerCore(["r0", "r1"], build_policy("session-affinity"), clock, session_idle_ttl_s=100.0)
    early = RequestInfo(request_id="a", session_id="early", arrived_at=0.0)
    core.request_arrived(early)  # arrives first, finishes last
    clock.now += 1.0
    for sid in ("b", "c"):
        core.request_arrived(RequestInfo(request_id=sid, session_id=sid, arrived_at=1.0))
        core.request_finished(sid)
    clock.now += 9.0
    core.request_finished("a")  # t=10
    core.request_arrived(RequestInfo(request_id="long", session_id="busy", arrived_at=10.0))  # never ends
    clock.now += 95.0  # t=105: b and c (seen at 1) are past the TTL, early (seen at 10) is not
    core.tick()
    assert set(core.sessions) == {"early", "busy"}
    clock.now += 200.0  # both past the TTL: the idle one goes, the one with a call in flight stays
    core.tick()
    assert set(core.sessions) == {"busy"}
    core.request_arrived(RequestInfo(request_id="d", session_id="d", arrived_at=305.0))
    core.request_finished("d")
    clock.now += 101.0  # a session behind a busy expired one is still found
    core.tick()
    assert set(core.sessions) == {"busy"}


def test_a_flood_of_new_sessions_evicts_the_least_recently_seen_idle_one_each_time() -> None:
    # The session tables are LRU queues whose front is found in O(1) (OrderedDicts split over shards,
    # predictor/sharded.py): a plain dict leaves a hole at the front of its entries for each key taken away
    # and walks all of them to find the first one, which made each eviction under a flood of new sessions
    # cost ~38 µs at 100,000 sessions (the proxy's throughput fell by a third within 30 s of one-shot calls).
    # The order they keep is checked against a list: the victim is the least recently seen idle session
    # that made one call, else the least recently seen idle one.
    rng = random.Random(7)
    clock = Clock()
    core = SchedulerCore(["r0", "r1"], build_policy("session-affinity"), clock, max_sessions=50)
    expected: list[str] = []  # the least recently seen first
    one_call: set[str] = set()  # inferred sessions with one call so far
    busy: set[str] = set()
    for n in range(3_000):
        clock.now += 1.0
        sid = rng.choice(expected[-20:]) if expected and rng.random() < 0.3 else f"s{n}"  # or seen again
        rid = f"c{n}"
        if sid in expected:
            expected.remove(sid)
            one_call.discard(sid)
        else:
            if len(expected) >= 50:
                idle = [s for s in expected if s not in busy]
                victim = next((s for s in idle if s in one_call), idle[0])
                expected.remove(victim)
                one_call.discard(victim)
            one_call.add(sid)
        expected.append(sid)
        core.request_arrived(
            RequestInfo(request_id=rid, session_id=sid, arrived_at=clock.now, session_inferred=True)
        )
        if rng.random() < 0.02 and len(busy) < 5:
            busy.add(sid)  # its call never ends: never evicted
        else:
            core.request_finished(rid)
            expected.remove(sid)
            expected.append(sid)  # a finish moves it to the end too
        assert list(core.sessions) == expected
        assert set(core._single_call) == one_call
    assert type(core.sessions) is ShardedLru and type(core._single_call) is ShardedLru


def test_a_flood_of_one_shot_calls_does_not_push_out_an_agent_waiting_on_a_tool() -> None:
    clock = Clock()
    core = SchedulerCore(["r0", "r1"], build_policy("session-affinity"), clock, max_sessions=10)
    for rid in ("a1", "a2"):  # an agent's two calls (its session inferred from its conversation)
        core.request_arrived(
            RequestInfo(request_id=rid, session_id="agent", arrived_at=clock.now, session_inferred=True)
        )
        core.request_finished(rid)
    clock.now += 1.0
    core.request_arrived(RequestInfo(request_id="n1", session_id="named", arrived_at=clock.now))  # one call,
    core.request_finished("n1")  # its id sent by the client: not a one-shot the proxy guessed
    for n in range(100):  # then one-shot calls, each a session of its own, while the agent runs a tool
        clock.now += 1.0
        core.request_arrived(
            RequestInfo(request_id=f"o{n}", session_id=f"o{n}", arrived_at=clock.now, session_inferred=True)
        )
        core.request_finished(f"o{n}")
    assert "agent" in core.sessions and "named" in core.sessions
    assert len(core.sessions) == 10
    assert [s for s in core.sessions if s.startswith("o")] == [f"o{n}" for n in range(92, 100)]


class PlainPrefixIndex:
    """The prefix index as sets of replicas per chunk (what the bit-mask index replaced)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.holders: dict[int, set[str]] = {}
        self.lru: dict[str, dict[int, None]] = {}

    def matches(self, hashes: Sequence[int]) -> dict[str, int]:
        matched: dict[str, int] = {}
        alive: set[str] | None = None
        for k, h in enumerate(hashes):
            holders = self.holders.get(h, set())
            alive = set(holders) if alive is None else alive & holders
            if not alive:
                break
            matched.update(dict.fromkeys(alive, k + 1))
        return matched

    def insert(self, hashes: Sequence[int], replica: str) -> None:
        lru = self.lru.setdefault(replica, {})
        for h in hashes:
            lru.pop(h, None)
            lru[h] = None
            self.holders.setdefault(h, set()).add(replica)
        while len(lru) > self.capacity:
            self.forget_chunk(replica, next(iter(lru)))

    def forget_chunk(self, replica: str, h: int) -> None:
        del self.lru[replica][h]
        self.holders[h].discard(replica)
        if not self.holders[h]:
            del self.holders[h]

    def forget_replica(self, replica: str) -> None:
        for h in list(self.lru.get(replica, {})):
            self.forget_chunk(replica, h)
        self.lru.pop(replica, None)


def test_prefix_index_matches_as_a_set_per_chunk_does() -> None:
    rng = random.Random(3)
    for _ in range(100):
        capacity = rng.choice((1, 3, 8, 50))
        fast, plain = PrefixIndex(capacity), PlainPrefixIndex(capacity)
        for _ in range(150):
            base = rng.randrange(3) * 100
            hashes = [base + k for k in range(rng.randrange(0, 10))]
            if hashes and rng.random() < 0.2:  # a chain that diverges part way
                hashes[rng.randrange(len(hashes))] = rng.randrange(1000)
            replica = f"r{rng.randrange(6)}"
            if rng.random() < 0.5:
                fast.insert(hashes, replica)
                plain.insert(hashes, replica)
            elif rng.random() < 0.1:
                fast.forget_replica(replica)
                plain.forget_replica(replica)
            assert fast.matches(hashes) == plain.matches(hashes)
            assert [fast.size(f"r{i}") for i in range(6)] == [
                len(plain.lru.get(f"r{i}", {})) for i in range(6)
            ]
