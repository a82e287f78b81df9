"""The shape coding-like agents share: a first prompt with a shared part, then steps that each append the
model's output and a tool result until the step count or the context limit is reached.

Contract: `growing_task` draws, per step, output then observation tokens, stops before a step that would
outgrow `max_context_tokens` (never before the first), then draws the tool with `draw_tool`; the draw order is
fixed so that a seed gives the same tasks.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from loadtests.tasks import AgentTask, Step
from loadtests.workloads.distributions import Dist

ToolDraw = Callable[[random.Random], tuple[str, float]]  # -> (tool name, tool latency in seconds)


def growing_task(
    rng: random.Random,
    session_id: str,
    *,
    calls_per_task: Dist,
    shared_prefix_tokens: int,
    first_prompt_tokens: Dist,
    output_tokens: Dist,
    new_input_tokens: Dist,
    max_context_tokens: int,
    draw_tool: ToolDraw,
    agent_type: str,
    tenant_id: str,
) -> AgentTask:
    calls = max(1, round(calls_per_task.draw(rng)))
    first = max(shared_prefix_tokens + 1, round(first_prompt_tokens.draw(rng)))
    context = first
    steps: list[Step] = []
    for _ in range(calls):
        output = max(1, round(output_tokens.draw(rng)))
        observation = max(1, round(new_input_tokens.draw(rng)))
        if context + output + observation > max_context_tokens and steps:
            break
        tool, latency = draw_tool(rng)
        steps.append(Step(output, tool, latency, observation))
        context += output + observation
    return AgentTask(
        session_id=session_id,
        system_tokens=shared_prefix_tokens,
        task_tokens=first - shared_prefix_tokens,
        steps=steps,
        tenant_id=tenant_id,
        agent_type=agent_type,
        seed=rng.randrange(2**31),
    )
