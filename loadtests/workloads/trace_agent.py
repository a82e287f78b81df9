"""`trace-agent`: sessions shaped like real mixed agentic traffic (WORKLOADS.md section 1, "Mixed real
agentic traffic", from data/inference-perf/agentic-trace-replay.config.json).

Calls per session log-normal with mean 21.9 and sd 23.4 (max 300); output per call mean 659 (heavy tail);
gap between calls mean 13 s with a long tail; input per call mean ~49k tokens, made of a large first prompt
(tool definitions, files) that then grows by each answer and tool result. Contexts are capped at the model's
window, where a real agent would compact its history.
"""

from __future__ import annotations

import random

import msgspec

from loadtests.agent_client import AgentTask, Step
from loadtests.workloads.distributions import LogNormal

TRACE_TOOLS = ("read", "edit", "bash", "grep", "web_fetch", "task")


class TraceAgentParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    calls_per_task: LogNormal = LogNormal.from_mean_sd(21.9, 23.4, cap=300)
    shared_prefix_tokens: int = 6000  # tool definitions and system prompt of the agent type
    first_prompt_tokens: LogNormal = LogNormal(20_000, 60_000, cap=100_000)
    new_input_tokens: LogNormal = LogNormal(900, 5000, cap=20_000)
    output_tokens: LogNormal = LogNormal.from_mean_sd(659, 1500, cap=8192)
    gap_s: LogNormal = LogNormal.from_median_mean(1.0, 13.0, cap=600)
    max_context_tokens: int = 128_000
    agent_type: str = "trace-agent"


def trace_agent_task(
    rng: random.Random, session_id: str, p: TraceAgentParams, *, tenant_id: str = "default"
) -> AgentTask:
    calls = max(1, round(p.calls_per_task.draw(rng)))
    first = max(p.shared_prefix_tokens + 1, round(p.first_prompt_tokens.draw(rng)))
    context = first
    steps: list[Step] = []
    for _ in range(calls):
        output = max(1, round(p.output_tokens.draw(rng)))
        observation = max(1, round(p.new_input_tokens.draw(rng)))
        if context + output + observation > p.max_context_tokens and steps:
            break
        steps.append(Step(output, rng.choice(TRACE_TOOLS), p.gap_s.draw(rng), observation))
        context += output + observation
    return AgentTask(
        session_id=session_id,
        system_tokens=p.shared_prefix_tokens,
        task_tokens=first - p.shared_prefix_tokens,
        steps=steps,
        tenant_id=tenant_id,
        agent_type=p.agent_type,
        seed=rng.randrange(2**31),
    )
