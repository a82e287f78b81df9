"""The routing arithmetic handed to proxy/scheduler/scoring.py (compiled) gives the same floats and the same
ties as the plugins' own comprehensions it replaced, on random replica views (round 7 of
docs/results/core-cost.md)."""

from __future__ import annotations

import random

import pytest

from proxy.scheduler import build_policy
from proxy.scheduler.prefix_index import PrefixIndex
from proxy.scheduler.scoring import (
    add_weighted,
    affinity_scores,
    best_ids,
    headroom_scores,
    least_request_scores,
    prefix_scores,
)
from proxy.scheduler.types import ReplicaView, RequestInfo


def _views(rng: random.Random, n: int) -> list[ReplicaView]:
    return [
        ReplicaView(
            f"r{i}",
            in_flight=rng.randrange(6),
            queued=rng.randrange(3),
            waiting=rng.randrange(4),
            running=rng.randrange(32),
            kv_usage=rng.choice([0.0, 1.0, 0, rng.random(), 1.5, -0.1]),
            kv_capacity_tokens=rng.choice([0, 100_000, 431_000, rng.randrange(1, 10**6)]),
            reserved_tokens=rng.choice([0, rng.randrange(10**6), 10**7]),
        )
        for i in range(n)
    ]


def _old_headroom(used: float, reserved: int, capacity: int) -> float:
    if capacity > 0 and reserved / capacity > used:
        used = reserved / capacity
    free = 1.0 - used
    return 1.0 if free > 1.0 else free if free > 0.0 else 0.0


def test_scorer_values_are_the_comprehensions_floats() -> None:
    rng = random.Random(11)
    for _ in range(300):
        views = _views(rng, rng.randrange(0, 70))
        plain = [1.0 / (1.0 + r.in_flight + r.queued + r.waiting) for r in views]
        assert least_request_scores(views) == plain
        assert headroom_scores(views) == [
            _old_headroom(r.kv_usage, r.reserved_tokens, r.kv_capacity_tokens) for r in views
        ]
        home = f"r{rng.randrange(80)}"
        assert affinity_scores(views, home) == [1.0 if r.replica_id == home else 0.0 for r in views]
        total = rng.randrange(1, 70)
        matched = {r.replica_id: rng.randrange(total + 1) for r in views if rng.random() < 0.5}
        depths = [matched.get(r.replica_id, 0) for r in views]
        assert prefix_scores(depths, total) == [matched.get(r.replica_id, 0) / total for r in views]


def test_prefix_depths_are_the_matches_per_candidate() -> None:
    """`PrefixIndex.depths` over random inserts (with eviction), forgotten replicas and prompts sharing
    prefixes: each candidate's depth is what `matches` maps it to (0 when absent)."""
    rng = random.Random(2)
    index = PrefixIndex(capacity_per_replica=40)
    names = [f"r{i}" for i in range(70)]  # more than 64: bits past a machine word
    chains = [[rng.randrange(1 << 60) for _ in range(12)] for _ in range(30)]
    for step in range(3000):
        chain = rng.choice(chains)
        prompt = chain[: rng.randrange(0, 13)] + ([rng.randrange(1 << 60)] if rng.random() < 0.3 else [])
        if rng.random() < 0.5:
            index.insert(prompt, rng.choice(names))
        elif rng.random() < 0.01:
            index.forget_replica(rng.choice(names))
        views = [ReplicaView(n) for n in rng.sample(names, rng.randrange(0, 70))]
        matched = index.matches(prompt)
        assert index.depths(prompt, views) == [matched.get(v.replica_id, 0) for v in views], step


def test_weighted_sum_and_ties_are_the_old_ones() -> None:
    rng = random.Random(5)
    for _ in range(300):
        views = _views(rng, rng.randrange(1, 70))
        totals = [0.0] * len(views)
        old = [0.0] * len(views)
        for weight in (4.0, 0.2, 0.5, 1.0, 3, 0.1):
            # coarse values make ties; ints where a custom scorer gives them
            values = [rng.choice([0.0, 1.0, 0.5, 1, rng.random(), 1 / 3]) for _ in views]
            add_weighted(totals, weight, values)
            old = [t + weight * v for t, v in zip(old, values, strict=True)]
        assert totals == old
        floor = max(old) - 1e-9
        tied = [r.replica_id for r, s in zip(views, old, strict=True) if s >= floor]
        assert best_ids(views, totals, 1e-9) == tied


def test_mismatched_lengths_raise_as_zip_strict_did() -> None:
    views = _views(random.Random(1), 3)
    with pytest.raises(ValueError):
        add_weighted([0.0, 0.0, 0.0], 1.0, [1.0, 1.0])
    with pytest.raises(ValueError):
        best_ids(views, [1.0], 1e-9)


def test_saga_route_picks_as_the_plugins_always_did() -> None:
    """The saga preset's route over random views: the same replica as the plain sum of `score` mappings and
    the same seeded draw among ties (two policies built with one seed consume their draws alike)."""
    rng = random.Random(9)
    fast, plain = build_policy("saga", seed=3), build_policy("saga", seed=3)
    for k in range(400):
        views = _views(rng, rng.randrange(1, 65))
        session = f"s{rng.randrange(20)}"
        req = RequestInfo(request_id=f"q{k}", session_id=session, arrived_at=0.0, prefix_hashes=(1, 2, k % 5))
        totals = {r.replica_id: 0.0 for r in views}
        for scorer, weight in plain.scorers:
            scores = scorer.score(req, views)
            for r in views:
                totals[r.replica_id] += weight * scores.get(r.replica_id, 0.0)
        floor = max(totals.values()) - 1e-9
        tied = [r.replica_id for r in views if totals[r.replica_id] >= floor]
        expected = tied[0] if len(tied) == 1 else plain.picker.rng.choice(tied)
        got = fast.route(req, views)
        assert got == expected
        for p in (fast, plain):
            for hook in p.dispatch_hooks:
                hook(req, got)
