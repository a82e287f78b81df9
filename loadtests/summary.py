"""Summaries of task records: completion-time statistics and prefix-cache hit rate."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

import msgspec

from loadtests.tasks import TaskRecord


class Summary(msgspec.Struct):
    tasks: int
    failed: int
    tct_mean_s: float
    tct_geomean_s: float
    tct_p50_s: float
    tct_p90_s: float
    tct_p99_s: float
    prefix_hit_rate: float  # cached prompt tokens / prompt tokens, over every call
    calls: int


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(records: Sequence[TaskRecord]) -> Summary:
    done = [r for r in records if not r.failed]
    times = [r.completion_time_s for r in done]
    calls = [c for r in records for c in r.calls if c.error is None]
    prompt = sum(c.prompt_tokens for c in calls)
    return Summary(
        tasks=len(records),
        failed=len(records) - len(done),
        tct_mean_s=statistics.fmean(times) if times else 0.0,
        tct_geomean_s=statistics.geometric_mean(times) if times and min(times) > 0 else 0.0,
        tct_p50_s=percentile(times, 50),
        tct_p90_s=percentile(times, 90),
        tct_p99_s=percentile(times, 99),
        prefix_hit_rate=sum(c.cached_tokens for c in calls) / prompt if prompt else 0.0,
        calls=len(calls),
    )
