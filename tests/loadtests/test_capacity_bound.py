"""The capacity-aware lower bound on geometric-mean TCT (loadtests/bench/capacity_bound.py)."""

from __future__ import annotations

import itertools
import math

import pytest

from loadtests.bench.capacity_bound import (
    MAX_TASKS,
    capacity_bound_geomean_s,
    geomean_bound_s,
    kv_area_token_s,
)
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import geomean
from loadtests.workloads.catalog import generate, with_poisson_arrivals
from simulator.cost_model import get_profile


def test_small_cases_solved_by_hand() -> None:
    # Two tasks at t=0, 1 s alone each, 10 token-s of KV each on a 10-token cluster: whichever finishes
    # first needs 1 s of the whole KV, the second 2 s: completions 1 and 2, geomean sqrt(2).
    assert geomean_bound_s([0, 0], [1, 1], [10, 10], 10) == pytest.approx(math.sqrt(2))
    # Ample KV: the isolated times are the bound.
    assert geomean_bound_s([0, 5], [3, 4], [10, 10], 1e9) == pytest.approx(math.sqrt(12))
    # The small task takes the first rank: 1 token-s -> done by 1 (its own 1 s), the big one by 101 -> 101.
    assert geomean_bound_s([0, 0], [1, 1], [1, 100], 1) == pytest.approx(math.sqrt(101))
    # The k-th completion needs the k smallest areas, whichever tasks they are (the bound does not know which
    # task completes first): an early big task (100 token-s) and a small one arriving at 50. Big first: rank
    # 1 needs 1 token-s, so its own 1 s binds (TCT 1); the small one second needs 101 -> 101 - 50 = 51. The
    # other order gives 1 and 101: the bound is sqrt(51).
    assert geomean_bound_s([0, 50], [1, 1], [100, 1], 1) == pytest.approx(math.sqrt(51))


def test_the_bound_is_at_least_the_isolated_times_and_tightens_as_the_kv_shrinks() -> None:
    profile = get_profile("llama3-8b-h100")
    tasks = with_poisson_arrivals(generate("webarena", 30, seed=0), 2.0, seed=0)
    isolated = {t.session_id: isolated_task_time_s(t, profile) for t in tasks}
    alone = geomean(list(isolated.values()))
    bounds = [capacity_bound_geomean_s(tasks, isolated, profile, c) for c in (10**12, 10**6, 10**5, 10**4)]
    assert all(b is not None for b in bounds)
    assert bounds[0] == pytest.approx(alone)
    assert all(b is not None and a is not None and b >= a - 1e-9 for a, b in itertools.pairwise(bounds))
    assert bounds[-1] is not None and bounds[-1] > 1.5 * alone  # a tiny KV binds
    closed = generate("webarena", 5, seed=0)  # no arrival times: a closed-loop run has no such bound
    assert capacity_bound_geomean_s(closed, isolated, profile, 10**6) is None
    too_many = list(tasks) * (MAX_TASKS // len(tasks) + 1)  # past the cap: no n x n matrix is built
    assert capacity_bound_geomean_s(too_many, isolated, profile, 10**6) is None


def test_a_task_holds_more_kv_the_longer_its_context() -> None:
    profile = get_profile("llama3-8b-h100")
    (task,) = generate("swe", 1, seed=0)
    longer = task.__class__(
        **{**{f: getattr(task, f) for f in task.__struct_fields__}, "task_tokens": 20_000}
    )
    assert 0 < kv_area_token_s(task, profile) < kv_area_token_s(longer, profile)
