"""Summaries of task records: completion-time statistics, prefix-cache hit rate, and failed tasks by reason
(a failed task is counted, never silently dropped: its completion time is left out of the statistics)."""

from __future__ import annotations

import math
import re
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
    failed_reasons: dict[str, int] = msgspec.field(default_factory=dict)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def failure_reason(error: str) -> str:
    """An error message as a failure category: numbers replaced by N, cut to 200 characters."""
    reason = _NUMBER.sub("N", error.strip())
    return reason if len(reason) <= 200 else reason[:199] + "…"


def failed_reasons(records: Sequence[TaskRecord]) -> dict[str, int]:
    """Failed tasks counted by the reason of their first failed call, most frequent first."""
    counts: dict[str, int] = {}
    for r in records:
        error = next((c.error for c in r.calls if c.error is not None), None)
        if error is not None:
            reason = failure_reason(error)
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


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
        failed_reasons=failed_reasons(records),
    )
