"""Workload generators: seeded, and matching WORKLOADS.md's statistics."""

from __future__ import annotations

import statistics

import pytest

from loadtests.summary import percentile
from loadtests.workloads.swe import SweParams, swe_tasks
from loadtests.workloads.webarena import WebArenaParams, webarena_tasks


def test_same_seed_same_tasks_other_seed_other_tasks() -> None:
    assert swe_tasks(20, seed=3) == swe_tasks(20, seed=3)
    assert swe_tasks(20, seed=3) != swe_tasks(20, seed=4)
    assert webarena_tasks(20, seed=3) == webarena_tasks(20, seed=3)


def test_swe_statistics_match_workloads_md() -> None:
    tasks = swe_tasks(2000, seed=1)
    calls = [len(t.steps) for t in tasks]
    assert 25 <= statistics.median(calls) <= 35
    assert max(calls) <= 150
    first = [t.system_tokens + t.task_tokens for t in tasks]
    assert min(first) >= 2500 and max(first) <= 5000
    assert {t.system_tokens for t in tasks} == {1750}
    steps = [s for t in tasks for s in t.steps]
    assert 650 <= statistics.median(s.observation_tokens for s in steps) <= 950
    assert 160 <= statistics.median(s.output_tokens for s in steps) <= 240
    assert 450 <= percentile([s.output_tokens for s in steps], 90) <= 750
    editor = sum(s.tool_name == "str_replace_editor" for s in steps) / len(steps)
    assert 0.46 <= editor <= 0.54


def test_swe_context_never_outgrows_the_model() -> None:
    p = SweParams(max_context_tokens=20_000)
    for t in swe_tasks(200, seed=2, params=p):
        grown = sum(s.output_tokens + s.observation_tokens for s in t.steps)
        context = t.system_tokens + t.task_tokens + grown
        assert context <= 20_000 or len(t.steps) == 1


@pytest.mark.parametrize("mode", ["baseline", "history"])
def test_webarena_statistics_match_workloads_md(mode: str) -> None:
    tasks = webarena_tasks(2000, seed=1, params=WebArenaParams(context_mode=mode))  # type: ignore[arg-type]
    steps = [len(t.steps) for t in tasks]
    assert 14 <= statistics.fmean(steps) <= 19 and max(steps) <= 30
    outputs = [s.output_tokens for t in tasks for s in t.steps]
    assert min(outputs) >= 50 and max(outputs) <= 384 and 130 <= statistics.median(outputs) <= 170
    latency = [s.tool_time_s for t in tasks for s in t.steps]
    assert 0.9 <= statistics.median(latency) <= 1.1
    assert 3.5 <= percentile(latency, 95) <= 5.5
    growth = [s.observation_tokens for t in tasks for s in t.steps]
    low, high = (300, 800) if mode == "history" else (1000, 1900)
    assert low <= min(growth) and max(growth) <= high
    assert all(t.replace_history == (mode == "baseline") for t in tasks)
