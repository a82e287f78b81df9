"""`interactive`: a coding assistant a person drives (Claude Code / Codex-like), from WORKLOADS.md section 1.

A session is a few user requests. Each request makes a burst of LLM calls (8.8 on average, p90 20, capped at
86) separated by short tool calls (read, edit, grep, bash, a sub-task: p50 ~0.3 s overall, a long tail of
shell commands and sub-tasks); the burst's last call answers the person without a tool call, and the person
then reads and types for minutes (log-normal, median `think_time_s.median`) before the next request, whose
message is appended to the context. The context starts with a large shared system prompt and tool
definitions and grows by each answer and tool result (median appended input ~875 tokens, output ~214).

Encoding in the task model: a step with an empty `tool_name` is an answer to the person; its `tool_time_s` is
the person's think time and its `observation_tokens` the person's next message. A session ends after its
last request's answer, or before a step that would outgrow `max_context_tokens`.
"""

from __future__ import annotations

import random

import msgspec

from loadtests.tasks import AgentTask, Step
from loadtests.workloads.distributions import LogNormal, ToolKind, Uniform, draw_tool

HUMAN_TURN = ""  # the tool name of a step that hands back to the person


class InteractiveParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    requests_per_session: LogNormal = LogNormal(4, 10, cap=30)
    calls_per_request: LogNormal = LogNormal(3.9, 20, cap=86)  # mean ~8.8, p90 20
    shared_prefix_tokens: int = 12_000  # system prompt and tool definitions of the assistant
    first_prompt_tokens: Uniform = Uniform(12_500, 16_000)  # shared part included
    new_input_tokens: LogNormal = LogNormal(875, 4000, cap=20_000)  # a tool result
    user_message_tokens: LogNormal = LogNormal(80, 600, cap=8000)
    output_tokens: LogNormal = LogNormal(214, 900, cap=8192)
    think_time_s: LogNormal = LogNormal(60, 300, cap=1800)  # minutes of reading and typing
    max_context_tokens: int = 120_000  # the next prompt plus its answer fit a 128k-token model
    tools: list[ToolKind] = msgspec.field(
        default_factory=lambda: [
            ToolKind("read", 0.30, LogNormal(0.05, 0.3)),
            ToolKind("edit", 0.20, LogNormal(0.1, 0.5)),
            ToolKind("grep", 0.15, LogNormal(0.2, 1.0)),
            ToolKind("bash", 0.28, LogNormal(3.0, 40, cap=600)),
            ToolKind("task", 0.07, LogNormal(40, 200, cap=600)),
        ]
    )
    agent_type: str = "coding-assistant"


def interactive_task(
    rng: random.Random, session_id: str, p: InteractiveParams, *, tenant_id: str = "default"
) -> AgentTask:
    requests = max(1, round(p.requests_per_session.draw(rng)))
    first = max(p.shared_prefix_tokens + 1, round(p.first_prompt_tokens.draw(rng)))
    context = first
    steps: list[Step] = []
    for r in range(requests):
        calls = max(1, round(p.calls_per_request.draw(rng)))
        for c in range(calls):
            output = max(1, round(p.output_tokens.draw(rng)))
            last_of_burst = c == calls - 1
            if last_of_burst:
                tool, wait = HUMAN_TURN, p.think_time_s.draw(rng)
                new = p.user_message_tokens if r < requests - 1 else None
            else:
                tool, wait = draw_tool(rng, p.tools)
                new = p.new_input_tokens
            observation = max(1, round(new.draw(rng))) if new is not None else 0
            if context + output + observation > p.max_context_tokens and steps:
                return _task(session_id, p, first, steps, tenant_id, rng)
            steps.append(Step(output, tool, wait, observation))
            context += output + observation
    return _task(session_id, p, first, steps, tenant_id, rng)


def _task(
    session_id: str, p: InteractiveParams, first: int, steps: list[Step], tenant_id: str, rng: random.Random
) -> AgentTask:
    return AgentTask(
        session_id=session_id,
        system_tokens=p.shared_prefix_tokens,
        task_tokens=first - p.shared_prefix_tokens,
        steps=steps,
        tenant_id=tenant_id,
        agent_type=p.agent_type,
        seed=rng.randrange(2**31),
    )
