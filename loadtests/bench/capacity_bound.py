"""A lower bound on the geometric-mean task completion time that also counts the KV capacity: what no
scheduler can beat on this cluster, where `bound_speedup` (the tasks' isolated times) counts only the tasks.

Contract (open-loop runs: every task has an arrival time; pure, deterministic):
- Each task needs KV while it decodes: every call holds at least its private context (its prompt less the
  system prompt its agent type shares, which the cache holds once) for at least its isolated decode time
  (a decode step in a batch is never faster than alone), so a task consumes at least `kv_area_token_s` of
  the cluster's KV capacity C (tokens) x time. Prefill, tool waits and everything shared are left out, so
  this is a lower bound on what any schedule spends.
- Whatever the schedule, the k-th task to complete has consumed, with the k-1 before it, at least S_k: the
  sum of the k smallest areas; all of it after the first arrival r0. So the k-th completion is at least
  L_k = r0 + S_k / C, and task i, whenever it completes, no sooner than its arrival plus its isolated time.
- The bound: the least sum of log(max(L_rank(i), r_i + d_i) - r_i) over every way of giving the tasks
  completion ranks (an assignment problem, solved exactly), as a geometric mean. It is at least the isolated
  geometric mean, and equal to it when the KV is never the limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment  # type: ignore[import-untyped]

from loadtests.tasks import AgentTask
from simulator.cost_model import Profile, step_time_s

MAX_TASKS = 4000  # the assignment builds a few tasks x tasks float arrays: ~0.5 GB in all at 4,000


def kv_area_token_s(task: AgentTask, profile: Profile) -> float:
    """KV tokens x seconds the task holds at least: each call's private context over its isolated decode."""
    area = 0.0
    for step, context in task.call_prompts():
        steps = step.output_tokens - 1
        if steps > 0:
            first = step_time_s(profile, num_tokens=1, decode_context_tokens=context + 1)
            last = step_time_s(profile, num_tokens=1, decode_context_tokens=context + steps)
            decode_s = steps * (first + last) / 2
            private = max(0, context - task.system_tokens)
            area += (private + steps / 2) * decode_s  # the context grows by one token a step
    return area


def capacity_bound_geomean_s(
    tasks: Sequence[AgentTask],
    isolated_s: Mapping[str, float],
    profile: Profile,
    capacity_tokens: int,
) -> float | None:
    """The bound above for `tasks` (those a comparison counts) on a cluster of `capacity_tokens` of KV; None
    for a closed-loop run (a task without an arrival time), no tasks, or more than `MAX_TASKS` (the
    assignment holds a tasks x tasks matrix)."""
    if not tasks or len(tasks) > MAX_TASKS or capacity_tokens <= 0 or any(t.arrival_s is None for t in tasks):
        return None
    return geomean_bound_s(
        [t.arrival_s or 0.0 for t in tasks],
        [isolated_s[t.session_id] for t in tasks],
        [kv_area_token_s(t, profile) for t in tasks],
        capacity_tokens,
    )


def geomean_bound_s(
    arrivals: Sequence[float], isolated: Sequence[float], areas: Sequence[float], capacity_tokens: float
) -> float:
    """The bound from each task's arrival, isolated time and KV area (see the module contract)."""
    arrived = np.array(arrivals, dtype=float)
    by_rank = float(arrived.min()) + np.cumsum(np.sort(np.array(areas, dtype=float))) / capacity_tokens
    # cost[i, k]: log of task i's completion time if it completes k-th, no sooner than its isolated finish
    finish = np.maximum(by_rank[None, :], (arrived + np.array(isolated, dtype=float))[:, None])
    cost = np.log(np.maximum(finish - arrived[:, None], 1e-9))
    rows, cols = linear_sum_assignment(cost)
    return math.exp(float(cost[rows, cols].sum()) / len(arrived))
