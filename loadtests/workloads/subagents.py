"""`swe-subagents`: the `swe` coding agent spawning subagents, as Claude Code's Task tool does.

vLLM's agentic traffic study finds subagents in 44% of sessions and publishes nothing on their
size, so the explorer below is this project's assumption, stated here: a task spawns with probability
`spawn_share`; such a task spawns at 1 to `max_spawns` of its steps (never its last), each time 1 to
`max_fan_out` explorers in parallel. An explorer is a read-only search agent of its own agent type (a shared
system prompt of its own): 4-12 calls, a first prompt of 3k-5k tokens, observations of a few hundred to a few
thousand tokens (file reads, searches), fast tools. The spawning step's own tool (`Task`) takes a moment of
bookkeeping; its next call waits for every explorer to end.

The main tasks are `swe`'s for the same seed (the subagents are drawn from a generator of their own), so
`swe-subagents` differs from `swe` only by the subagents. `swe-subagents-merged` is the same tasks with each
subagent's calls sent under its parent's session id: what a proxy that does not tell subagents apart sees.
"""

from __future__ import annotations

import random

import msgspec

from loadtests.tasks import AgentTask
from loadtests.workloads.distributions import LogNormal, Uniform
from loadtests.workloads.growing import growing_task
from loadtests.workloads.swe import SweParams, swe_task


class SubagentParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    spawn_share: float = 0.44
    max_spawns: int = 2
    max_fan_out: int = 4
    calls: Uniform = Uniform(4, 12)
    shared_prefix_tokens: int = 1500
    first_prompt_tokens: Uniform = Uniform(3000, 5000)
    output_tokens: LogNormal = LogNormal(150, 400, cap=2048)
    new_input_tokens: LogNormal = LogNormal(600, 3000, cap=8000)
    tool_time_s: LogNormal = LogNormal(0.1, 0.8, cap=10)
    task_tool_time_s: float = 0.05  # the spawning step's own bookkeeping
    agent_type: str = "explorer"
    swe: SweParams = msgspec.field(default_factory=SweParams)


def _explorer(rng: random.Random, session_id: str, parent: AgentTask, p: SubagentParams) -> AgentTask:
    task = growing_task(
        rng,
        session_id,
        calls_per_task=p.calls,
        shared_prefix_tokens=p.shared_prefix_tokens,
        first_prompt_tokens=p.first_prompt_tokens,
        output_tokens=p.output_tokens,
        new_input_tokens=p.new_input_tokens,
        max_context_tokens=p.swe.max_context_tokens,
        draw_tool=lambda r: ("read", p.tool_time_s.draw(r)),
        agent_type=p.agent_type,
        tenant_id=parent.tenant_id,
    )
    return msgspec.structs.replace(task, parent_session=parent.session_id)


def with_subagents(task: AgentTask, p: SubagentParams, *, merged: bool = False) -> AgentTask:
    """`task` with the subagents its seed draws (`merged`: sent under its session id)."""
    rng = random.Random(f"{task.session_id}/subagents")
    if len(task.steps) < 2 or rng.random() >= p.spawn_share:
        return task
    steps = list(task.steps)
    spawns = sorted(rng.sample(range(len(steps) - 1), min(len(steps) - 1, rng.randint(1, p.max_spawns))))
    for k, at in enumerate(spawns):
        subagents = tuple(
            msgspec.structs.replace(
                _explorer(rng, f"{task.session_id}/agent-{k}-{j}", task, p), merged=merged
            )
            for j in range(rng.randint(1, p.max_fan_out))
        )
        steps[at] = msgspec.structs.replace(
            steps[at], tool_name="Task", tool_time_s=p.task_tool_time_s, subagents=subagents
        )
    return msgspec.structs.replace(task, steps=steps)


def swe_subagent_task(
    rng: random.Random,
    session_id: str,
    p: SubagentParams,
    *,
    tenant_id: str = "default",
    merged: bool = False,
) -> AgentTask:
    return with_subagents(swe_task(rng, session_id, p.swe, tenant_id=tenant_id), p, merged=merged)
