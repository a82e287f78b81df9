"""The workload catalog: mixes, tenants, open-loop arrivals and trace replay."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest

from loadtests.workloads.catalog import WORKLOADS, TenantStream, generate, with_poisson_arrivals
from loadtests.workloads.trace_replay import parse_trace


@pytest.mark.parametrize("name", WORKLOADS)
def test_every_workload_is_seeded(name: str) -> None:
    assert generate(name, 30, seed=5) == generate(name, 30, seed=5) != generate(name, 30, seed=6)


def test_trace_agent_matches_the_agentic_trace_statistics() -> None:
    tasks = generate("trace-agent", 3000, seed=1)
    calls = [len(t.steps) for t in tasks]
    assert 17 <= statistics.mean(calls) <= 24 and max(calls) <= 300  # trace: mean 21.9 (context caps trim)
    steps = [s for t in tasks for s in t.steps]
    assert 500 <= statistics.mean(s.output_tokens for s in steps) <= 750  # trace: mean 659
    assert 9 <= statistics.mean(s.tool_time_s for s in steps) <= 15  # trace: mean gap 13 s
    # Mean input per call: the whole context each call re-sends (trace: 49k mean, heavy tail).
    inputs = []
    for t in tasks:
        context = t.system_tokens + t.task_tokens
        for s in t.steps:
            inputs.append(context)
            context += s.output_tokens + s.observation_tokens
    assert 30_000 <= statistics.mean(inputs) <= 70_000


def test_mixed_draws_every_agent_type_by_weight() -> None:
    kinds = Counter(t.agent_type for t in generate("mixed", 2000, seed=2))
    assert set(kinds) == {"swe-agent", "browser-agent", "trace-agent"}
    assert 0.35 <= kinds["swe-agent"] / 2000 <= 0.45


def test_tenants_get_tasks_by_weight_with_their_workload_and_slo_class() -> None:
    streams = [
        TenantStream("heavy", weight=3, slo_class="batch", workload="swe"),
        TenantStream("light", weight=1, slo_class="interactive", workload="webarena"),
    ]
    tasks = generate("multi", 800, seed=3, tenants=streams)
    by_tenant = Counter(t.tenant_id for t in tasks)
    assert 0.7 <= by_tenant["heavy"] / 800 <= 0.8
    for t in tasks:
        expected = ("swe-agent", "batch") if t.tenant_id == "heavy" else ("browser-agent", "interactive")
        assert (t.agent_type, t.slo_class) == expected
    assert len({t.session_id for t in tasks}) == 800


def test_unknown_workload_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known: swe"):
        generate("nope", 1)
    with pytest.raises(ValueError, match="unknown workload 'nope'"):
        generate("swe", 1, tenants=[TenantStream("t", workload="nope")])


def test_poisson_arrivals_are_seeded_increasing_and_at_the_rate() -> None:
    tasks = with_poisson_arrivals(generate("webarena", 4000, seed=1), rate_per_s=2.0, seed=9)
    times = [t.arrival_s or 0.0 for t in tasks]
    assert times == sorted(times) and times[0] > 0
    assert 1.9 <= len(times) / times[-1] <= 2.1
    assert with_poisson_arrivals(tasks, 2.0, seed=9) == tasks
    with pytest.raises(ValueError):
        with_poisson_arrivals(tasks, 0.0)


TRACE = """session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms,tenant
b,5.0,0,1000,400,50,0,t2
a,1.5,1,2420,700,80,2500,t1
a,1.5,0,2000,300,120,1200,t1
"""


def test_trace_replay_builds_growing_sessions_in_arrival_order() -> None:
    a, b = parse_trace(TRACE.splitlines())
    assert (a.session_id, a.arrival_s, a.tenant_id, a.system_tokens, a.task_tokens) == (
        "a",
        1.5,
        "t1",
        2000,
        300,
    )
    assert [(s.output_tokens, s.tool_time_s, s.observation_tokens) for s in a.steps] == [
        (120, 1.2, 700),
        (80, 2.5, 0),
    ]
    assert (b.session_id, b.arrival_s, len(b.steps)) == ("b", 5.0, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("session_id,arrival_time\nx,1\n", "missing columns"),
        (TRACE.replace("a,1.5,1,", "a,1.5,2,"), "rounds must be"),
        (TRACE.replace("b,5.0,0,1000", "b,soon,0,1000"), "line 2"),
        (TRACE.replace(",50,0,t2", ",0,0,t2"), "output_len must be >= 1"),
    ],
)
def test_malformed_traces_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_trace(text.splitlines())
