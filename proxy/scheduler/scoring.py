"""The per-candidate arithmetic of a routing decision, in plain functions mypyc compiles (setup.py): the
built-in scorers' values, `RoutingPolicy.route`'s weighted sum and the max-score picker's ties.

Why: a new workflow is scored over every replica with room, 64 in issue 11's bench, and in pure Python the
four scorers of the `saga` policy, their sum and the pick took ~35 µs of its arrival
(docs/results/core-cost.md, round 7). The plugins hold msgspec Params (a Struct does not survive mypyc) and
stay pure Python; they hand the loops here. Each function computes the same floats, in the same order, as
the plugin's own comprehension did (tests/scheduler/test_scoring.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.scheduler.types import ReplicaId, ReplicaView


def add_weighted(totals: list[float], weight: float, values: Sequence[float]) -> None:
    """totals[i] += weight x values[i], in place (`values` is one scorer's, aligned with the candidates)."""
    if len(values) != len(totals):
        raise ValueError(f"a scorer gave {len(values)} values for {len(totals)} candidates")
    for i in range(len(totals)):
        totals[i] = totals[i] + weight * values[i]


def best_ids(replicas: Sequence[ReplicaView], scores: Sequence[float], tie: float) -> list[ReplicaId]:
    """The ids of the candidates whose score is within `tie` of the highest, in the candidates' order."""
    if len(scores) != len(replicas):
        raise ValueError(f"{len(scores)} scores for {len(replicas)} candidates")
    floor = max(scores) - tie
    return [replicas[i].replica_id for i in range(len(replicas)) if scores[i] >= floor]


def affinity_scores(replicas: Sequence[ReplicaView], home: ReplicaId) -> list[float]:
    """1.0 for the replica `home`, 0.0 for the others."""
    return [1.0 if r.replica_id == home else 0.0 for r in replicas]


def prefix_scores(depths: Sequence[int], total: int) -> list[float]:
    """Leading chunks matched on each replica (`PrefixIndex.depths`) / the prompt's chunks (`total` > 0)."""
    return [depth / total for depth in depths]


def headroom_scores(replicas: Sequence[ReplicaView]) -> list[float]:
    """1 - max(reserved / capacity, kv_usage) clamped to [0, 1]; 1 - kv_usage where the capacity is
    unknown."""
    out = []
    for r in replicas:
        used = r.kv_usage
        capacity = r.kv_capacity_tokens
        if capacity > 0:
            share = r.reserved_tokens / capacity
            if share > used:  # max(used, reserved share): the same float
                used = share
        free = 1.0 - used
        out.append(1.0 if free > 1.0 else free if free > 0.0 else 0.0)
    return out


def least_request_scores(replicas: Sequence[ReplicaView]) -> list[float]:
    """1 / ((1 + in_flight + queued + waiting) x slowness), summed left to right as the scorer always did (a
    slowness of 1.0, every replica's unless speeds are measured, leaves the sum as it was, to the bit)."""
    return [1.0 / ((1.0 + r.in_flight + r.queued + r.waiting) * r.slowness) for r in replicas]
