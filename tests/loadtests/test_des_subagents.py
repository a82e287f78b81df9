"""Subagents in the discrete-event cluster: a step's subagents run in parallel, its task's next call waits for
all of them, and the scheduler sees each subagent as the proxy does (its own session, linked to its parent's,
or merged into it)."""

from __future__ import annotations

import msgspec

from fairness import TenantsConfig
from loadtests.bench.isolated import isolated_task_time_s
from loadtests.bench.metrics import policy_metrics
from loadtests.des.cluster import Cluster
from loadtests.des.result import ClusterConfig, ClusterResult
from loadtests.tasks import AgentTask
from loadtests.workloads.catalog import generate
from loadtests.workloads.distributions import LogNormal, ToolKind, Uniform
from loadtests.workloads.subagents import SubagentParams, with_subagents
from loadtests.workloads.swe import SweParams, swe_tasks
from proxy.scheduler import RequestInfo, build_policy
from simulator.cost_model import PROFILES
from tests.recording_core import ArrivalsCore

SMALL = SubagentParams(
    spawn_share=1.0,
    calls=Uniform(2, 4),
    swe=SweParams(
        calls_per_task=LogNormal(6, 10, cap=10), tools=[ToolKind("bash", 1.0, LogNormal(0.2, 0.4))]
    ),
)


def spawning_tasks(n: int, merged: bool = False) -> list[AgentTask]:
    return [with_subagents(t, SMALL, merged=merged) for t in swe_tasks(n, seed=3, params=SMALL.swe)]


def run(tasks: list[AgentTask], concurrency: int) -> tuple[ClusterResult, list[RequestInfo]]:
    config = ClusterConfig(replicas=2, policy="saga", concurrency=concurrency)
    cluster = Cluster(tasks, config)
    core = ArrivalsCore(
        cluster.replicas, build_policy("saga", seed=0), cluster.queue, tenants=TenantsConfig()
    )
    cluster.core = core
    return cluster.run(), core.arrivals


def test_the_workload_adds_subagents_to_swe_tasks_and_nothing_else() -> None:
    plain, spawning = generate("swe", 30, seed=1), generate("swe-subagents", 30, seed=1)
    merged = generate("swe-subagents-merged", 30, seed=1)
    assert [len(t.steps) for t in plain] == [len(t.steps) for t in spawning]
    for a, b in zip(plain, spawning, strict=True):  # the same calls; a spawning step's tool is `Task`
        assert [s.output_tokens for s in a.steps] == [s.output_tokens for s in b.steps]
        assert all(s.tool_name == "Task" for s in b.steps if s.subagents)
    subs = [(t, sub) for t in spawning for s in t.steps for sub in s.subagents]
    assert subs and all(sub.parent_session == t.session_id and not sub.merged for t, sub in subs)
    assert all(not t.steps[-1].subagents for t in spawning)  # the last call ends the task: it spawns none
    assert all(sub.merged for t in merged for s in t.steps for sub in s.subagents)
    unmerge = [
        msgspec.structs.replace(sub, merged=False) for t in merged for s in t.steps for sub in s.subagents
    ]
    assert unmerge == [sub for _, sub in subs]  # the same tasks, sent under the parent's session id


def test_a_task_waits_for_its_subagents_and_the_scheduler_sees_them_as_the_proxy_does() -> None:
    tasks = spawning_tasks(4)
    result, seen = run(tasks, concurrency=4)
    assert len(result.tasks) == 4 and not any(r.failed for r in result.tasks)
    for task, record in zip(tasks, result.tasks, strict=True):
        spawned = [sub for s in task.steps for sub in s.subagents]
        assert [r.session_id for r in record.subagents] == [sub.session_id for sub in spawned]
        assert all(len(r.calls) == len(sub.steps) for r, sub in zip(record.subagents, spawned, strict=True))
        for k, step in enumerate(task.steps[:-1]):
            ids = {sub.session_id for sub in step.subagents}
            if ids:  # the next call starts once the last of this step's subagents has ended
                ended = max(r.finished_s for r in record.subagents if r.session_id in ids)
                assert record.calls[k + 1].started_s >= ended
        assert record.completion_time_s >= isolated_task_time_s(task, PROFILES["llama3-8b-h100"]) * 0.99
    # the per-call figures count the subagents' calls too
    profile = PROFILES["llama3-8b-h100"]
    isolated = {t.session_id: isolated_task_time_s(t, profile) for t in tasks}
    metrics = policy_metrics(result.tasks, tasks, isolated)
    assert metrics.calls == len(seen) == sum(len(t.steps) for task in tasks for t in task.and_subagents())
    subagent_calls = [r for r in seen if r.parent_session]
    assert subagent_calls
    assert all(r.session_id.startswith(r.parent_session + "/agent-") for r in subagent_calls)


def test_merged_subagents_are_sent_under_their_parents_session() -> None:
    tasks = spawning_tasks(2, merged=True)
    result, seen = run(tasks, concurrency=2)
    assert not any(r.failed for r in result.tasks)
    assert {r.session_id for r in seen} == {t.session_id for t in tasks}
    assert not any(r.parent_session for r in seen) and len({r.request_id for r in seen}) == len(seen)
